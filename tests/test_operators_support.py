"""Shared pieces for the operator tests: a scripted engine and hand-made trajectories.

Imported by name (`from test_operators_support import ...`; tests/ is on sys.path under
pytest). It holds no tests itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.engine import Adapter, Completion, SamplingParams
from agents.trajectory import Trajectory

Reply = str | Completion
BatchScript = Callable[[list[Any]], list[Reply]]


@dataclass
class ScriptedEngine:
    """An `Engine` whose every `generate` call answers from the next entry of a script.

    Each script entry is a function from the batch of conversations to one reply per
    conversation (a string, or a `Completion` to simulate errors). Every call is recorded.
    """

    script: list[BatchScript]
    name: str = "scripted"
    calls: list[tuple[list[Any], SamplingParams, Adapter | None]] = field(default_factory=list)

    @property
    def tokenizer(self) -> Any:
        return None

    def generate(
        self, prompts: Sequence[Any], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        self.calls.append((list(prompts), params, adapter))
        if len(self.calls) > len(self.script):
            raise AssertionError(f"unexpected generate call #{len(self.calls)}")
        replies = self.script[len(self.calls) - 1](list(prompts))
        assert len(replies) == len(prompts), "script returned the wrong number of replies"
        return [[reply if isinstance(reply, Completion) else _completion(reply)] for reply in replies]

    def close(self) -> None:
        pass
    def adapter_from(self, source: Any) -> Adapter:
        raise NotImplementedError("a scripted engine serves no trained adapter")

    def release_turns(self) -> None:
        pass


    def user_texts(self, call: int) -> list[str]:
        """The user turn of every conversation sent in generate call `call`."""
        return [conversation[-1]["content"] for conversation in self.calls[call][0]]


def _completion(text: str) -> Completion:
    n_tokens = max(1, len(text.split()))
    return Completion(token_ids=list(range(n_tokens)), logprobs=[0.0] * n_tokens, text=text, finish_reason="stop")


def constant(text: str) -> BatchScript:
    """Every conversation of the batch gets `text`."""
    return lambda conversations: [text] * len(conversations)


def per_item(texts: Sequence[Reply]) -> BatchScript:
    """Conversation i of the batch gets texts[i]."""
    return lambda conversations: list(texts)[: len(conversations)]


def fenced(json_text: str) -> str:
    return f"Here is my answer.\n```json\n{json_text}\n```\nDone."


def trajectory(
    task_id: str,
    reward: float,
    prompt_id: str | None = "p0000",
    *,
    question: str | None = None,
    reply: str = "I think the answer is 4.",
    gold: str | None = "4",
    error: str | None = None,
) -> Trajectory:
    question = question or f"Question for {task_id}: what is 2 + 2?"
    info: dict[str, Any] = {"correct": reward > 0}
    if gold is not None:
        info["gold"] = gold
    return Trajectory(
        env_id="test-env",
        task_id=task_id,
        prompt_id=prompt_id,
        messages=[{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
        reward=reward,
        done=True,
        error=error,
        info=info,
    )
