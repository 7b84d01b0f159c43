"""An evaluation's size says tasks, episodes in all and samples per task, without ambiguity."""

from __future__ import annotations

from agents.trajectory import Trajectory
from espl.leaderboard.collect import EvalSize
from espl.run.metrics import summarize


def _episodes(per_task: dict[str, int]) -> list[Trajectory]:
    return [Trajectory("espl/GSM8K-v0", task, sample_index=s, reward=float(s == 0))
            for task, n in per_task.items() for s in range(n)]


def test_the_size_is_tasks_episodes_and_samples_per_task() -> None:
    metrics = summarize(_episodes({"a": 2, "b": 2, "c": 2}), ks=(1, 2))
    assert (metrics["n_tasks"], metrics["episodes"], metrics["samples_per_task"]) == (3, 6, 2)
    assert "n_samples" not in metrics
    assert metrics["accuracy"] == 0.5 and metrics["pass@2"] == 1.0


def test_uneven_samples_have_no_single_count_per_task() -> None:
    metrics = summarize(_episodes({"a": 1, "b": 3}))
    assert (metrics["n_tasks"], metrics["episodes"], metrics["samples_per_task"]) == (2, 4, None)


def test_leaderboards_read_records_from_before_the_rename() -> None:
    assert EvalSize.of({"n_tasks": 24, "episodes": 48}) == EvalSize(24, 48)
    assert EvalSize.of({"n_tasks": 24, "n_samples": 48}) == EvalSize(24, 48)  # `n_samples` meant episodes
    assert EvalSize.of({"n_tasks": 24}) is None
    assert EvalSize(24, 48).label() == "24 × 2"
