"""Evaluate a policy on tasks: k samples per task through the rollout driver."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.engine import Adapter
from agents.rollout import Episode, RolloutDriver
from agents.trajectory import Trajectory
from envs.base import Task
from espl.run.metrics import summarize


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    trajectories: list[Trajectory]


def evaluate(
    driver: RolloutDriver,
    tasks: Sequence[Task],
    *,
    n_samples: int = 1,
    system_prompt: str | None = None,
    prompt_id: str | None = None,
    adapter: Adapter | None = None,
    batch_size: int = 64,
    seed: int = 0,
    ks: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run `n_samples` episodes per task, in batches, and compute accuracy and pass@k.

    `progress` receives the number of finished episodes each time one ends, so a bar moves
    per episode (a multi-turn batch can take minutes) rather than per batch.
    """
    episodes = [Episode(task, system_prompt, prompt_id, s) for task in tasks for s in range(n_samples)]
    trajectories: list[Trajectory] = []
    finished = 0

    def one_more(_: Trajectory) -> None:
        nonlocal finished
        finished += 1
        if progress is not None:
            progress(finished)

    for start in range(0, len(episodes), batch_size):
        batch = episodes[start : start + batch_size]
        trajectories += driver.run(batch, adapter, seed=seed + start, on_episode=one_more)
    ks = ks or sorted({1, n_samples})
    return EvalResult(summarize(trajectories, ks), trajectories)
