"""The RL step both sides of the TRL comparison run: one definition, read by both workers.

SmolLM2-135M-Instruct in fp32 on CPU, LoRA rank 8 (alpha 16, no dropout) on every
projection, GRPO (clipped ratio, per-sequence token mean, group-normalised advantages, no
KL), Adam at a constant learning rate, 8 GSM8K test questions x 4 samples x 64 new tokens at
temperature 1 (`ESPL_BENCH_QUICK=1`: 4 questions and 32 tokens). Step `i` uses questions `8i .. 8i+7` on both sides, and both score replies
through the same path: `MathEnv.step_batch`, i.e. the shared math-verify pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.workers.runtime import QUICK
from espl.rl.settings import DEFAULT_TARGETS

MODEL = "smollm2-135m"
ENV = "gsm8k"


@dataclass(frozen=True)
class Workload:
    prompts: int = 8
    generations: int = 4
    new_tokens: int = 64
    lora_rank: int = 8
    lora_alpha: int = 16
    learning_rate: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.95)
    micro_batch_size: int = 8
    temperature: float = 1.0

    @property
    def sequences(self) -> int:
        return self.prompts * self.generations

    @property
    def target_modules(self) -> list[str]:
        return list(DEFAULT_TARGETS)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": MODEL, "env": ENV, "prompts": self.prompts, "generations": self.generations,
            "new_tokens": self.new_tokens, "lora_rank": self.lora_rank, "lora_alpha": self.lora_alpha,
            "learning_rate": self.learning_rate, "micro_batch_size": self.micro_batch_size,
        }


def current_workload() -> Workload:
    """The full workload, or with `ESPL_BENCH_QUICK=1` 4 prompts x 4 samples x 32 tokens."""
    return Workload(prompts=4, new_tokens=32) if QUICK else Workload()


def tasks() -> list[Any]:
    """GSM8K test questions, in a fixed order."""
    from envs import registry

    return list(registry.make(ENV).tasks)


def step_tasks(all_tasks: Sequence[Any], step: int, workload: Workload) -> list[Any]:
    start = (step * workload.prompts) % len(all_tasks)
    return [all_tasks[(start + k) % len(all_tasks)] for k in range(workload.prompts)]


class MathReward:
    """Scores (task, reply) pairs the way the rollout does: reset a math env per reply and
    step them all with one `step_batch` call (one pass through the verifier pool)."""

    def __init__(self) -> None:
        from envs import registry

        self._make = lambda: registry.make(ENV)
        self._envs: list[Any] = []

    def __call__(self, task_list: Sequence[Any], replies: Sequence[str]) -> list[float]:
        while len(self._envs) < len(replies):
            self._envs.append(self._make())
        envs = self._envs[: len(replies)]
        for env, task in zip(envs, task_list):
            env.reset(options={"task": task})
        results = type(envs[0]).step_batch(envs, list(replies))
        return [float(reward) for _, reward, _, _, _ in results]
