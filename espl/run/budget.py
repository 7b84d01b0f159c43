"""Budget accounting in the same units for every method.

Rollouts and generated tokens are counted separately for training and evaluation; reflector
work (mutation, crossover, GEPA's reflection) is counted in calls and tokens. A leaderboard
row is only comparable with another when these counters are close.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from agents.trajectory import Trajectory


@dataclass
class Budget:
    train_rollouts: int = 0
    train_generated_tokens: int = 0
    eval_rollouts: int = 0
    eval_generated_tokens: int = 0
    reflector_calls: int = 0
    reflector_prompt_tokens: int = 0
    reflector_completion_tokens: int = 0
    optimizer_steps: int = 0

    def add_rollouts(self, trajectories: Iterable[Trajectory], *, evaluation: bool = False) -> None:
        trajectories = list(trajectories)
        tokens = sum(t.n_sampled for t in trajectories)
        if evaluation:
            self.eval_rollouts += len(trajectories)
            self.eval_generated_tokens += tokens
        else:
            self.train_rollouts += len(trajectories)
            self.train_generated_tokens += tokens

    def add_reflector(self, calls: int, prompt_tokens: int, completion_tokens: int) -> None:
        self.reflector_calls += calls
        self.reflector_prompt_tokens += prompt_tokens
        self.reflector_completion_tokens += completion_tokens

    @property
    def total_generated_tokens(self) -> int:
        return self.train_generated_tokens + self.eval_generated_tokens + self.reflector_completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_generated_tokens": self.total_generated_tokens}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in data.items() if k in names})
