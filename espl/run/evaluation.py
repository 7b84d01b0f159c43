"""Evaluate a policy on tasks: k samples per task through the rollout driver.

The adapter is pinned: every request of an evaluation names the version it was started with,
even when the trainer publishes a newer one meanwhile (a fleet keeps the last versions
loaded), and the metrics say which version that was (`EVALUATED_ADAPTER`) and what share of
the turns the servers report having sampled with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agents.engine import Adapter
from agents.rollout import Episode, RolloutDriver
from agents.trajectory import Trajectory
from envs.base import Task
from espl.run.metrics import summarize
from espl.run.on_policy import adapter_share

EVALUATED_ADAPTER = "evaluated_adapter"
"""The metrics key: the evaluated adapter's `name` and `version` (None: base weights) and
`sampled_share`, the share of turns whose server says it sampled with that name (None: the
engine does not say, as in-process engines)."""


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
    """Run `n_samples` episodes per task, in batches, all with `adapter`, and compute accuracy
    and pass@k.

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
    metrics = summarize(trajectories, ks)
    metrics[EVALUATED_ADAPTER] = {
        "name": adapter.name if adapter is not None else None,
        "version": adapter.version if adapter is not None else None,
        "sampled_share": adapter_share(trajectories, adapter),
    }
    return EvalResult(metrics, trajectories)
