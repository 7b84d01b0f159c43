"""Learning curves: a metric per iteration, mean ± s.e. over the seeds that reached it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from espl.leaderboard.collect import RunRecord
from espl.leaderboard.stats import estimate


@dataclass(frozen=True)
class Curve:
    label: str
    iterations: tuple[int, ...]
    mean: tuple[float, ...]
    se: tuple[float, ...]
    """0 where only one seed reached the iteration."""
    method: str = ""
    """The runs' method: it picks the curve's colour (`colours.method_colour`)."""


def mean_curve(runs: Sequence[RunRecord], metric: str, label: str) -> Curve | None:
    by_iteration: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for iteration, value in run.curve(metric):
            by_iteration[iteration].append(value)
    if not by_iteration:
        return None
    iterations = sorted(by_iteration)
    estimates = [estimate(by_iteration[i]) for i in iterations]
    return Curve(
        label,
        tuple(iterations),
        tuple(e.mean for e in estimates if e is not None),
        tuple((e.se or 0.0) for e in estimates if e is not None),
        runs[0].method,
    )
