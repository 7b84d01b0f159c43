"""Environments over `reasoning-gym` datasets: generated offline, difficulty set by config.

A tiny model needs tasks where it is right sometimes but not always, or a comparison between
methods has nothing to measure; reasoning-gym's generators make that difficulty a parameter.

Splits: one generator (seeded by `seed`) draws a pool of problems; duplicates of a question
are dropped, the first copy kept (small difficulty settings repeat questions), and
`envs.datasets.split_rows` (seed 0) splits the rest, so no question is in both splits.
"Duplicate" means equal after `envs.datasets.normalise_text` (case and whitespace folded),
the rule every env's splits follow.
Scoring is the dataset's own `score_answer` on the text inside the last `<answer>` tag, or the
last `\\boxed{}`, or else the last number in the reply (small models rarely use the tags), or
else the last line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from envs.base import Message, Task, TextEnv
from envs.datasets import normalise_text, split_rows

INSTRUCTION = "Give only the final result inside <answer></answer>, for example <answer>42</answer>."
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(reply: str) -> str:
    for pattern in (_ANSWER, _BOXED, _NUMBER):
        found = pattern.findall(reply)
        if found:
            return found[-1].strip()
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


@lru_cache(maxsize=32)
def _dataset(name: str, config_items: tuple[tuple[str, Any], ...], size: int, seed: int) -> Any:
    import reasoning_gym

    return reasoning_gym.create_dataset(name, size=size, seed=seed, **dict(config_items))


def _freeze(config: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in config.items()))


class ReasoningGymEnv(TextEnv):
    """Single-turn env over one reasoning-gym dataset; reward = the dataset's own score."""

    action_regex = r"[^<>]{0,300}<answer>[^<>]{1,30}</answer>"
    """Optional working, then the result inside <answer></answer> (the reply ends there)."""

    def __init__(
        self,
        dataset: str = "basic_arithmetic",
        config: Mapping[str, Any] | None = None,
        split: str = "test",
        pool_size: int = 1000,
        test_fraction: float = 0.3,
        seed: int = 0,
        render_mode: str | None = None,
    ):
        self.dataset_name = dataset
        self._data = _dataset(dataset, _freeze(config or {}), pool_size, seed)
        unique: dict[str, int] = {}
        for index, entry in enumerate(self._data):
            unique.setdefault(normalise_text(entry["question"]), index)
        train_idx, test_idx = split_rows(sorted(unique.values()), test_size=test_fraction)
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}; use train or test")
        self._entries: dict[str, dict[str, Any]] = {}
        tasks = []
        for index in train_idx if split == "train" else test_idx:
            entry = self._data[index]
            task_id = f"{dataset}/{index}"
            self._entries[task_id] = entry
            tasks.append(Task(task_id, entry["question"], (str(entry["answer"]),), {"dataset": dataset}))
        super().__init__(tasks, split=split, render_mode=render_mode)

    def initial_messages(self, task: Task) -> list[Message]:
        return [{"role": "user", "content": f"{task.question}\n\n{INSTRUCTION}"}]

    def respond(self, action: str):
        assert self.task is not None
        prediction = extract_answer(action)
        entry = self._entries.get(self.task.id) or {"question": self.task.question, "answer": self.task.answers[0], "metadata": {}}
        try:
            score = float(self._data.score_answer(prediction, entry))
        except Exception as error:  # a scorer crash on odd text is a wrong answer, not a dead rollout
            return 0.0, True, None, {"prediction": prediction, "gold": self.task.answers[0], "error": str(error)}
        return score, True, None, {"prediction": prediction, "gold": self.task.answers[0], "correct": score >= 1.0}
