"""Read finished run directories: the summary, the config and the per-iteration metrics."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from espl.run.run_dir import CONFIG, METRICS, PROMPTS, SUMMARY, RunDir


class NoRunsError(ValueError):
    """Nothing matched was a finished run directory."""


@dataclass(frozen=True, order=True)
class EvalSize:
    """How much one test evaluation measured: `n_tasks` tasks, `episodes` in all.

    Both are the eval record's own fields (`espl.run.metrics.summarize`), so an accuracy can be
    read with the number of episodes behind it: 30% of 24 x 2 is not 30% of 500 x 10.
    """

    n_tasks: int
    episodes: int

    def label(self, times: str = " × ") -> str:
        """`tasks × samples per task`; both totals when the samples do not split evenly."""
        if self.n_tasks > 0 and self.episodes % self.n_tasks == 0:
            return f"{self.n_tasks}{times}{self.episodes // self.n_tasks}"
        return f"{self.n_tasks} tasks / {self.episodes} episodes"

    @classmethod
    def of(cls, record: dict[str, Any] | None) -> EvalSize | None:
        """The size of an eval record; None when it does not say (older records). Records
        written before `episodes` was named so call it `n_samples`."""
        record = record or {}
        episodes = record.get("episodes", record.get("n_samples"))
        if record.get("n_tasks") is None or episodes is None:
            return None
        return cls(int(record["n_tasks"]), int(episodes))


@dataclass(frozen=True)
class RunRecord:
    """One finished run as the leaderboard sees it."""

    path: Path
    summary: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[dict[str, Any], ...] = ()

    @property
    def env(self) -> str:
        return str(self.summary["env"])

    @property
    def method(self) -> str:
        return str(self.summary["method"])

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", 0))

    @property
    def key(self) -> tuple[str, str]:
        return self.env, self.method

    @property
    def has_prompt_log(self) -> bool:
        return (self.path / PROMPTS).exists()

    @property
    def eval_sizes(self) -> tuple[EvalSize, ...]:
        """The sizes of every test evaluation the run recorded (metrics.jsonl, and the final and
        best blocks of summary.json), distinct and sorted; empty when none says."""
        records = [record.get("eval") for record in self.metrics]
        records += [self.summary.get("final"), self.summary.get("best")]
        return tuple(sorted({size for record in records if (size := EvalSize.of(record)) is not None}))

    @property
    def children(self) -> int:
        """Prompts the run's operators created (every prompt in its prompt log but the seeds):
        a mutating method whose runs made none evaluated its seed prompt, which a reader
        must be able to see beside its accuracy."""
        if not self.has_prompt_log:
            return 0
        return sum(prompt.get("operator") != "seed" for record in RunDir(self.path).read(PROMPTS)
                   for prompt in record.get("new_prompts", ()))

    def curve(self, metric: str) -> list[tuple[int, float]]:
        """(iteration, value) pairs: `accuracy`, `pass@k` (test evals) or `train_reward`."""
        points: list[tuple[int, float]] = []
        for record in self.metrics:
            if metric == "train_reward":
                value = record.get("train_reward")
            else:
                value = (record.get("eval") or {}).get(metric)
            if value is not None:
                points.append((int(record["iteration"]), float(value)))
        return points


def load_run(path: str | Path) -> RunRecord:
    run_dir = RunDir(path)
    summary_file = run_dir.file(SUMMARY)
    if not summary_file.exists():
        raise FileNotFoundError(f"{run_dir.path} has no {SUMMARY} (the run has not finished)")
    summary = json.loads(summary_file.read_text())
    config = run_dir.read_json(CONFIG) if run_dir.file(CONFIG).exists() else {}
    return RunRecord(run_dir.path, summary, config, tuple(run_dir.read(METRICS)))


def find_run_dirs(patterns: Sequence[str | Path]) -> list[Path]:
    """Run directories named by paths or globs; a folder of runs is searched recursively.

    Sorted and deduplicated, so the same inputs always give the same leaderboard.
    """
    found: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(str(pattern))] or [Path(pattern)]
        for match in matches:
            if (match / SUMMARY).exists():
                found.add(match.resolve())
            elif match.is_dir():
                found.update(p.parent.resolve() for p in match.rglob(SUMMARY))
    return sorted(found)


def load_runs(paths: Iterable[str | Path]) -> list[RunRecord]:
    runs = [load_run(path) for path in paths]
    if not runs:
        raise NoRunsError("no finished run directory (one with summary.json) was found")
    return sorted(runs, key=lambda r: (r.env, r.method, r.seed, str(r.path)))
