"""The engine protocol: batched generation that returns the sampled tokens and their logprobs.

Every engine (`hf`, `vllm`, `openai`) takes a batch of prompts, each either token ids
(token-in/token-out, what the rollout driver sends) or a chat conversation, and returns for
each prompt `n` completions carrying the exact token ids it sampled. Training builds its
sequences from those ids; nothing is ever re-tokenized.

What differs between engines is part of the protocol, so no caller tests an engine's name:
how an engine takes the adapter a trainer just updated (`adapter_from`: a reference to the
live in-process weights, or a published folder), and forgetting conversations kept for a
next turn once every episode of a batch has ended (`release_turns`). An engine that can give
its accelerator memory back while a trainer on the same device steps says so (`Sleeper`). An
engine whose servers take each request on its own (remote HTTP engines) says so too
(`RequestEngine`): a caller may then send one prompt at a time and not wait for a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

TokenPrompt = list[int]
Conversation = list[dict[str, str]]
Prompt = TokenPrompt | Conversation
FinishReason = Literal["stop", "length", "error"]


@dataclass(frozen=True)
class Constraint:
    """What a completion must match (structured generation), exactly one of:

    - `json_schema`: a JSON schema, as JSON text (`Constraint.schema(dict)` builds one);
    - `regex`: a regular expression the whole completion matches;
    - `grammar`: an EBNF grammar in xgrammar's dialect (what vLLM's xgrammar backend reads;
      `xgrammar.Grammar` composes them, e.g. free text followed by a JSON list).

    An engine that enforces it masks the tokens that cannot continue a match before sampling.
    The logprobs it reports stay those of the unmasked distribution (what a trainer
    recomputes), and a completion says whether a constraint shaped it
    (`Completion.extra["constrained"]`).
    """

    json_schema: str | None = None
    regex: str | None = None
    grammar: str | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("json_schema", "regex", "grammar") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a constraint is exactly one of json_schema, regex, grammar; got {given or 'none'}")

    @classmethod
    def schema(cls, schema: Any) -> Constraint:
        import json

        return cls(json_schema=json.dumps(schema, sort_keys=True))


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by all engines (vLLM's names and meanings)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    """Stop strings. The matched stop string is kept at the end of the completion."""
    seed: int | None = None
    n: int = 1
    logprobs: bool = True
    constraint: Constraint | None = None
    """Structured generation (see `Constraint`); None: free text."""

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter version the engine should sample with.

    `name` identifies the adapter inside an in-process model (`hf`); `path` is a saved peft
    folder for engines that load adapters from disk (`vllm`); `version` increases with every
    published update so engines that cache adapters by id (vLLM's `LoRARequest`) see a new one.
    """

    name: str = "policy"
    path: str | None = None
    version: int = 0


@dataclass
class Completion:
    """One sampled continuation."""

    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: FinishReason
    stop_string: str | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.finish_reason != "error"

    @classmethod
    def failed(cls, error: str) -> Completion:
        """A completion that records an engine error instead of raising for the whole batch."""
        return cls(token_ids=[], logprobs=[], text="", finish_reason="error", error=error)


@runtime_checkable
class AdapterSource(Protocol):
    """A trainer's adapter as an engine can take it after an update."""

    def adapter(self) -> Adapter:
        """A reference to the live adapter inside the trainer's own model (no copy)."""
        ...

    def published_adapter(self) -> Adapter:
        """The adapter saved as a peft folder, with a new version (for engines that load from disk)."""
        ...


@runtime_checkable
class Engine(Protocol):
    """Generates completions for a batch of prompts.

    Returns one list of `params.n` completions per prompt, in prompt order. An engine that
    fails on one prompt returns `Completion.failed(...)` for it rather than raising, so one
    bad request does not lose the batch.
    """

    name: str

    @property
    def tokenizer(self) -> Any:
        """The tokenizer whose ids the engine consumes and returns (a HF tokenizer)."""
        ...

    def generate(
        self,
        prompts: Sequence[Prompt],
        params: SamplingParams,
        adapter: Adapter | None = None,
    ) -> list[list[Completion]]: ...

    def adapter_from(self, source: AdapterSource) -> Adapter:
        """The adapter to sample with after `source`'s latest update (raises if this engine
        cannot sample with trained weights)."""
        ...

    def release_turns(self) -> None:
        """Forget whatever is kept for the next turn of a conversation (a no-op for most engines)."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Sleeper(Protocol):
    """An engine that can free its accelerator memory while another part of the process (a
    trainer on the same GPU) needs it, and take it back before it generates again."""

    @property
    def can_sleep(self) -> bool:
        """Whether this engine was built able to sleep (vLLM needs it at construction)."""
        ...

    def sleep(self) -> None:
        """Free the memory; no generation until `wake`."""
        ...

    def wake(self) -> None:
        """Take the memory back; generation works again."""
        ...


@runtime_checkable
class RequestEngine(Protocol):
    """An engine that serves every prompt as a request of its own (servers batch on their side),
    so one prompt can be sent the moment it is ready: the rollout driver sends an episode's next
    turn as soon as its own previous reply is in, instead of waiting for a whole turn's batch.

    `submit(prompt, params, adapter, row=i)` is prompt `i` of `generate(prompts, params,
    adapter)`: the same request, seeded from `(params.seed, row)`, so a result depends on the
    row a caller names, never on what else is in flight or on the order replies come back."""

    def submit(
        self, prompt: Prompt, params: SamplingParams, adapter: Adapter | None = None, *, row: int = 0
    ) -> Future[list[Completion]]:
        """Send one prompt now; the future holds its `params.n` completions (failed ones rather
        than an exception when the request fails)."""
        ...
