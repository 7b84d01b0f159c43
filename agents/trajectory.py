"""Token-level records of one episode: what the policy sampled and what the env said back.

A trajectory is the concatenation of the prompt's token ids, each turn's sampled ids (as the
engine returned them) and each env reply's ids. `loss_mask` is 1 exactly on sampled ids, so
training never learns to predict retrieved passages or error messages; `logprobs` holds the
sampling policy's logprob for each sampled id (0.0 elsewhere), which the RL losses use as
the "old" policy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type only: the trainer and engines import trajectories without gymnasium
    from envs.base import Message

SUCCESS_REWARD = 1.0
"""An episode succeeded when its reward reaches this: the envs reward a correct answer with 1."""


@dataclass
class TurnRecord:
    """One policy generation inside an episode."""

    start: int
    """Index in `Trajectory.token_ids` of the first sampled id of this turn."""
    n_sampled: int
    n_env: int
    finish_reason: str
    reward: float
    info: dict[str, Any] = field(default_factory=dict)
    constrained: bool = False
    """A constraint (the env's action format) shaped this turn's tokens. The logprobs are the
    unmasked policy's all the same, so a trainer's importance ratio stays about 1."""
    adapter: str | None = None
    """The adapter version the engine says it sampled this turn with (the `fleet` engine's
    served model name); None where the engine does not say."""


@dataclass
class Trajectory:
    env_id: str
    task_id: str
    prompt_id: str | None = None
    sample_index: int = 0
    system_prompt: str | None = None
    token_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    prompt_length: int = 0
    turns: list[TurnRecord] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    """The env's side of the chat (the system prompt is kept apart, in `system_prompt`)."""
    reward: float = 0.0
    done: bool = False
    truncated: bool = False
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        """The one definition of success (evaluation accuracy, mixed problems, pass@k): the
        episode ran (no engine error) and its reward reached `SUCCESS_REWARD`."""
        return self.error is None and self.reward >= SUCCESS_REWARD

    # -- building ------------------------------------------------------------------------
    def append_prompt(self, ids: list[int]) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))
        self.prompt_length = len(self.token_ids)

    def append_sampled(self, ids: list[int], logprobs: list[float]) -> int:
        if len(ids) != len(logprobs):
            raise ValueError(f"{len(ids)} sampled ids but {len(logprobs)} logprobs")
        start = len(self.token_ids)
        self.token_ids.extend(ids)
        self.loss_mask.extend([1] * len(ids))
        self.logprobs.extend(float(x) for x in logprobs)
        return start

    def append_env(self, ids: list[int]) -> None:
        self.token_ids.extend(ids)
        self.loss_mask.extend([0] * len(ids))
        self.logprobs.extend([0.0] * len(ids))

    # -- views ---------------------------------------------------------------------------
    @property
    def n_sampled(self) -> int:
        return sum(self.loss_mask)

    @property
    def n_env(self) -> int:
        return len(self.token_ids) - self.prompt_length - self.n_sampled

    @property
    def response_text(self) -> str:
        """The agent's replies, joined (for reflection and display)."""
        return "\n".join(m["content"] for m in self.messages if m["role"] == "assistant")

    def to_record(self, *, with_tokens: bool = True) -> dict[str, Any]:
        """A JSON-serialisable dict (one line of `rollouts.jsonl`)."""
        record = asdict(self)
        record["n_sampled"] = self.n_sampled
        record["n_env"] = self.n_env
        if not with_tokens:
            for key in ("token_ids", "loss_mask", "logprobs"):
                record.pop(key)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Trajectory:
        record = {k: v for k, v in record.items() if k not in ("n_sampled", "n_env")}
        turns = [TurnRecord(**t) for t in record.pop("turns", [])]
        return cls(**record, turns=turns)
