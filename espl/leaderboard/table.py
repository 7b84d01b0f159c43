"""Aggregate runs into leaderboard rows: one per (env, method), mean ± s.e. over seeds."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from espl.leaderboard.collect import EvalSize, RunRecord
from espl.leaderboard.configs import ConfigWarning, config_warnings
from espl.leaderboard.stats import Estimate, estimate

BUDGET_FIELDS = ("train_rollouts", "train_generated_tokens", "total_generated_tokens", "reflector_calls", "reflector_tokens",
                 "children")


@dataclass(frozen=True)
class LeaderboardRow:
    env: str
    method: str
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    final_accuracy: Estimate | None
    """Test accuracy at each run's last evaluation: not chosen by its test score, so unbiased."""
    max_test_accuracy: Estimate | None
    """Each run's highest test accuracy over its evaluations: chosen on the test set, so optimistic."""
    pass_at: dict[str, Estimate | None]
    eval_sizes: tuple[EvalSize, ...]
    """The sizes of the runs' test evaluations, distinct; one unless the runs or evaluations differ."""
    runs_without_eval_size: int
    budget: dict[str, Estimate | None]
    wall_s: Estimate | None
    hardware: tuple[str, ...]
    torch: tuple[str, ...]
    git_commits: tuple[str, ...]
    runs: tuple[RunRecord, ...] = field(repr=False, default=())

    @property
    def sort_key(self) -> tuple[Any, ...]:
        accuracy = self.final_accuracy.mean if self.final_accuracy else float("-inf")
        return self.env, -accuracy, self.method


@dataclass(frozen=True)
class Leaderboard:
    title: str
    rows: tuple[LeaderboardRow, ...]
    pass_keys: tuple[str, ...]
    """pass@k columns present in any run, by k."""
    config_warnings: tuple[ConfigWarning, ...] = ()
    """Per env, the config keys (other than method and seed) on which its merged runs differ."""

    @property
    def envs(self) -> list[str]:
        return list(dict.fromkeys(row.env for row in self.rows))

    def rows_for(self, env: str) -> list[LeaderboardRow]:
        return [row for row in self.rows if row.env == env]

    @property
    def runs(self) -> list[RunRecord]:
        return [run for row in self.rows for run in row.runs]


def build_leaderboard(runs: Sequence[RunRecord], title: str) -> Leaderboard:
    groups: dict[tuple[str, str], list[RunRecord]] = defaultdict(list)
    for run in runs:
        groups[run.key].append(run)
    pass_keys = sorted({k for run in runs for k in _metric_block(run, "final") if k.startswith("pass@")}, key=_pass_k)
    rows = sorted((aggregate(group, pass_keys) for group in groups.values()), key=lambda r: r.sort_key)
    return Leaderboard(title, tuple(rows), tuple(pass_keys), config_warnings(runs))


def aggregate(runs: Sequence[RunRecord], pass_keys: Sequence[str] = ()) -> LeaderboardRow:
    runs = sorted(runs, key=lambda r: (r.seed, str(r.path)))
    first = runs[0]
    return LeaderboardRow(
        env=first.env,
        method=first.method,
        models=_unique(str(r.summary.get("model", "?")) for r in runs),
        seeds=tuple(r.seed for r in runs),
        final_accuracy=_estimate(runs, "final", "accuracy"),
        max_test_accuracy=_estimate(runs, "best", "accuracy"),
        pass_at={key: _estimate(runs, "final", key) for key in pass_keys},
        eval_sizes=tuple(sorted({size for r in runs for size in r.eval_sizes})),
        runs_without_eval_size=sum(not r.eval_sizes for r in runs),
        budget={name: estimate([_budget_value(r, name) for r in runs]) for name in BUDGET_FIELDS},
        wall_s=estimate([float(r.summary.get("wall_s", 0.0)) for r in runs]),
        hardware=_unique(hardware_label(r.summary.get("hardware") or {}) for r in runs),
        torch=_unique(str((r.summary.get("hardware") or {}).get("torch", "-")) for r in runs),
        git_commits=_unique(short_commit(r.summary.get("git_commit")) for r in runs),
        runs=tuple(runs),
    )


def hardware_label(hardware: dict[str, Any]) -> str:
    if hardware.get("gpu"):
        count = int(hardware.get("gpu_count", 1))
        return f"{count}x {hardware['gpu']}" if count > 1 else str(hardware["gpu"])
    return f"CPU x{hardware.get('cpu_count', '?')}"


def short_commit(commit: str | None) -> str:
    if not commit:
        return "unknown"
    head, dirty, _ = commit.partition("-dirty")
    return head[:10] + ("-dirty" if dirty else "")


def _metric_block(run: RunRecord, block: str) -> dict[str, Any]:
    return run.summary.get(block) or {}


def _estimate(runs: Sequence[RunRecord], block: str, metric: str) -> Estimate | None:
    return estimate([float(v) for r in runs if (v := _metric_block(r, block).get(metric)) is not None])


def _budget_value(run: RunRecord, name: str) -> float:
    budget = run.summary.get("budget") or {}
    if name == "children":
        return float(run.children)
    if name == "reflector_tokens":
        return float(budget.get("reflector_prompt_tokens", 0)) + float(budget.get("reflector_completion_tokens", 0))
    return float(budget.get(name, 0))


def _pass_k(key: str) -> tuple[int, str]:
    match = re.fullmatch(r"pass@(\d+)", key)
    return (int(match.group(1)) if match else 10**9, key)


def _unique(values: Any) -> tuple[str, ...]:
    return tuple(sorted(set(values)))
