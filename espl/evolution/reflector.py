"""The reflector: the LLM that summarises rollouts and rewrites principles, behind any `Engine`.

By default it is the policy's own engine called with `adapter=None` (the frozen base weights),
but any engine works, an OpenAI-compatible endpoint included. Operators send every request of a
stage in one `ask_many` call, which is one batched `generate` call: on a small CPU model a
batch of 10 costs little more than a single request, ten sequential requests cost ten times as
much. The reflector also keeps the budget figures every method reports in the same units:
reflector calls (one per conversation), prompt tokens and generated tokens.

Engine failures never escape as exceptions: a failed or missing completion becomes a
`ReflectorReply` with `ok=False` and the error text, so an operator can record "no child"
instead of crashing the training loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from agents.chat import render_ids
from agents.engine import Adapter, Completion, Constraint, Conversation, Engine, SamplingParams

log = logging.getLogger(__name__)

DEFAULT_REFLECTION_SAMPLING = SamplingParams(temperature=0.7, top_p=0.95, max_tokens=512, logprobs=False)
"""Some randomness (so repeated mutations of one prompt differ), no logprobs (nothing trains on them)."""

CHARS_PER_TOKEN_ESTIMATE = 4.0
"""Used only when neither the engine nor a tokenizer can say how long a prompt was."""


@dataclass
class ReflectorUsage:
    """Budget spent on reflection. `calls` counts conversations; `batches` counts `generate` calls."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed_calls: int = 0
    batches: int = 0
    estimated_prompt_tokens: bool = False
    """True when some prompt lengths were estimated from characters (no tokenizer available)."""

    def add(self, other: ReflectorUsage) -> None:
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.failed_calls += other.failed_calls
        self.batches += other.batches
        self.estimated_prompt_tokens = self.estimated_prompt_tokens or other.estimated_prompt_tokens

    def __sub__(self, other: ReflectorUsage) -> ReflectorUsage:
        return ReflectorUsage(
            calls=self.calls - other.calls,
            prompt_tokens=self.prompt_tokens - other.prompt_tokens,
            completion_tokens=self.completion_tokens - other.completion_tokens,
            failed_calls=self.failed_calls - other.failed_calls,
            batches=self.batches - other.batches,
            estimated_prompt_tokens=self.estimated_prompt_tokens,
        )

    def copy(self) -> ReflectorUsage:
        return replace(self)

    def to_record(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "failed_calls": self.failed_calls,
            "batches": self.batches,
            "estimated_prompt_tokens": self.estimated_prompt_tokens,
        }


@dataclass(frozen=True)
class ReflectorReply:
    """One reflector answer: its text, or why there is none."""

    text: str
    ok: bool
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"

    @classmethod
    def failed(cls, error: str, prompt_tokens: int = 0) -> ReflectorReply:
        return cls(text="", ok=False, error=error, prompt_tokens=prompt_tokens, finish_reason="error")


@runtime_checkable
class ReflectorLike(Protocol):
    """What the operators need: batched questions and a running usage total."""

    usage: ReflectorUsage

    def ask_many(
        self, conversations: Sequence[Conversation], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        constraint: Constraint | None = None,
    ) -> list[ReflectorReply]: ...


class Reflector:
    """Sends chat conversations to an engine in one batch and keeps the reflection budget."""

    def __init__(
        self,
        engine: Engine,
        sampling: SamplingParams = DEFAULT_REFLECTION_SAMPLING,
        *,
        adapter: Adapter | None = None,
        structured: bool = True,
    ) -> None:
        self.engine = engine
        self.sampling = replace(sampling, n=1)
        self.adapter = adapter
        self.structured = structured
        """Pass the stages' constraints (their replies' shapes) to the engine."""
        self.usage = ReflectorUsage()

    def begin(self, seed: int | None) -> None:
        """Start an iteration's reflection: usage from zero, sampling seeded with `seed` (each
        batch then draws from `seed` plus its index, so a resumed run reflects the same way)."""
        self.usage = ReflectorUsage()
        self.sampling = replace(self.sampling, seed=seed)

    def ask_many(
        self, conversations: Sequence[Conversation], *, max_tokens: int | None = None, stop: Sequence[str] = (),
        constraint: Constraint | None = None,
    ) -> list[ReflectorReply]:
        """One reply per conversation, in order, from a single `generate` call.

        `max_tokens` is this stage's budget (summaries need fewer tokens than a revision plan),
        never above the reflector's own `max_tokens`, the limit every method's reflection
        shares; `stop` adds stop strings (kept at the end of the text), so a
        stage whose answer has a known end does not pay for the rambling after it. With a
        seed in the sampling settings, each batch gets its own seed derived from it, so
        successive stages do not reuse the same noise.
        """
        if not conversations:
            return []
        params = self._params(max_tokens)
        if stop:
            params = replace(params, stop=tuple(dict.fromkeys((*params.stop, *stop))))
        if constraint is not None and self.structured:  # the reply's shape, where the engine enforces one
            params = replace(params, constraint=constraint)
        prompt_lengths = [self._prompt_tokens(c) for c in conversations]
        try:
            outputs = self.engine.generate(list(conversations), params, self.adapter)
        except Exception as error:  # any engine-wide failure: every request of the batch fails
            log.warning("reflector engine failed: %s: %s", type(error).__name__, error)
            outputs = [[Completion.failed(f"{type(error).__name__}: {error}")] for _ in conversations]
        replies = [
            self._reply(outputs[i] if isinstance(outputs, Sequence) and i < len(outputs) else None, prompt_lengths[i])
            for i in range(len(conversations))
        ]
        self._count(replies)
        return replies

    # -- internals ---------------------------------------------------------------------------

    def _params(self, max_tokens: int | None) -> SamplingParams:
        params = self.sampling
        if max_tokens is not None:  # a stage's own budget, within the reflector's limit
            params = replace(params, max_tokens=min(max_tokens, self.sampling.max_tokens))
        if params.seed is not None:
            params = replace(params, seed=params.seed + self.usage.batches)
        return params

    def _reply(self, completions: Any, prompt_tokens: int) -> ReflectorReply:
        if not isinstance(completions, Sequence) or not completions:
            return ReflectorReply.failed("the engine returned no completion for this prompt", prompt_tokens)
        completion = completions[0]
        if not isinstance(completion, Completion):
            return ReflectorReply.failed(f"the engine returned a {type(completion).__name__}", prompt_tokens)
        reported = completion.extra.get("prompt_tokens") if isinstance(completion.extra, dict) else None
        if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 0:
            prompt_tokens = reported
        if not completion.ok:
            return ReflectorReply.failed(completion.error or "engine error", prompt_tokens)
        text = completion.text if isinstance(completion.text, str) else ""
        generated = len(completion.token_ids)
        if not generated and isinstance(completion.extra, dict):  # a server that returns no ids
            reported_generated = completion.extra.get("completion_tokens")
            generated = reported_generated if isinstance(reported_generated, int) and reported_generated > 0 else 0
        return ReflectorReply(
            text=text,
            ok=True,
            prompt_tokens=prompt_tokens,
            completion_tokens=generated,
            finish_reason=str(completion.finish_reason),
        )

    def _count(self, replies: Sequence[ReflectorReply]) -> None:
        self.usage.batches += 1
        self.usage.calls += len(replies)
        self.usage.failed_calls += sum(not r.ok for r in replies)
        self.usage.prompt_tokens += sum(r.prompt_tokens for r in replies)
        self.usage.completion_tokens += sum(r.completion_tokens for r in replies)

    def _prompt_tokens(self, conversation: Conversation) -> int:
        """Prompt length through the engine's chat template, or a character estimate without one."""
        try:
            tokenizer = self.engine.tokenizer
            if tokenizer is not None:
                return len(render_ids(tokenizer, conversation, add_generation_prompt=True))
        except Exception:  # no tokenizer, no template, or a remote engine: fall back to an estimate
            pass
        self.usage.estimated_prompt_tokens = True
        chars = sum(len(str(m.get("content", ""))) for m in conversation)
        return math.ceil(chars / CHARS_PER_TOKEN_ESTIMATE)


def ask_safely(
    reflector: ReflectorLike, conversations: Sequence[Conversation], *, max_tokens: int | None = None,
    stop: Sequence[str] = (), constraint: Constraint | None = None,
) -> list[ReflectorReply]:
    """`reflector.ask_many` for any implementation, with a reply per conversation guaranteed.

    `Reflector` already turns engine errors into failed replies; this also covers other
    `ReflectorLike` implementations that raise or return the wrong number of replies.
    """
    if not conversations:
        return []
    try:
        extra: dict[str, Any] = {"stop": tuple(stop)} if stop else {}  # older implementations take no `stop`
        if constraint is not None:
            extra["constraint"] = constraint
        replies = list(reflector.ask_many(conversations, max_tokens=max_tokens, **extra))
    except Exception as error:
        log.warning("reflector failed: %s: %s", type(error).__name__, error)
        return [ReflectorReply.failed(f"{type(error).__name__}: {error}") for _ in conversations]
    replies = [r if isinstance(r, ReflectorReply) else ReflectorReply.failed("not a reply") for r in replies]
    missing = len(conversations) - len(replies)
    if missing > 0:
        replies.extend(ReflectorReply.failed("the reflector returned no reply") for _ in range(missing))
    return replies[: len(conversations)]
