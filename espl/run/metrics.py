"""Evaluation metrics over trajectories: mean accuracy and unbiased pass@k."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from math import comb
from typing import Any

from agents.trajectory import Trajectory


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021): 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples per task, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def summarize(trajectories: Iterable[Trajectory], ks: Sequence[int] = (1,)) -> dict[str, Any]:
    """Accuracy (mean over all samples), pass@k (mean over tasks), token and error counts.

    The size is `n_tasks`, `episodes` (in all) and `samples_per_task` (None when tasks had
    different numbers); records written before these names said `n_samples` for `episodes`.
    """
    by_task: dict[str, list[Trajectory]] = defaultdict(list)
    for trajectory in trajectories:
        by_task[trajectory.task_id].append(trajectory)
    if not by_task:
        return {"n_tasks": 0, "episodes": 0, "samples_per_task": 0, "accuracy": 0.0}
    samples = [t for group in by_task.values() for t in group]
    per_task = {len(group) for group in by_task.values()}
    result: dict[str, Any] = {
        "n_tasks": len(by_task),
        "episodes": len(samples),
        "samples_per_task": per_task.pop() if len(per_task) == 1 else None,
        "accuracy": sum(t.succeeded for t in samples) / len(samples),
        "mean_reward": sum(t.reward for t in samples) / len(samples),
        "generated_tokens": sum(t.n_sampled for t in samples),
        "errors": sum(t.error is not None for t in samples),
        "truncated": sum(t.truncated for t in samples),
    }
    n_min = min(len(group) for group in by_task.values())
    for k in ks:
        if k <= n_min:
            result[f"pass@{k}"] = sum(
                pass_at_k(len(g), sum(t.succeeded for t in g), k) for g in by_task.values()
            ) / len(by_task)
    return result
