"""The run directory: everything needed to resume a run and to rebuild its leaderboard row.

    config.json        the resolved configuration
    metrics.jsonl      one line per iteration (train reward per prompt, losses, tokens, timings,
                       test accuracy and pass@k at the evaluation interval)
    rollouts.jsonl     every trajectory, tagged with its iteration and phase (train / eval)
    prompts.jsonl      the prompt population, ratings and lineage (espl.evolution.prompt_log.PromptLog)
    checkpoint/        trainer and loop state after the last completed iteration (the loop
                       state records the precision the run started in: espl.run.kept_precision)
    summary.json       model, method, env, seed, budget, hardware, wall time, git commit, scores
    extensions.jsonl   each `--resume --iterations N` that extended the run (`espl.run.extension`),
                       with summary-at-<n>.json, the summary of the run before it
    tensorboard/ wandb/ mlflow/   the experiment trackers' copies, when `report_to` names them
                       (`espl.tracking`; the run never depends on them)

Appends are flushed and fsynced (`espl.files.jsonl`), so a killed run loses at most the
iteration in flight; on resume, lines of iterations after the checkpoint are cut away before
the run continues.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from espl.files.jsonl import JsonlLog

CONFIG = "config.json"
METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"
PROMPTS = "prompts.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint"
LOOP_STATE = "loop.json"


class RunDir:
    """A run's folder; its JSONL records are `JsonlLog`s (crash-safe appends, torn-tail repair)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    def log(self, name: str) -> JsonlLog:
        return JsonlLog(self.file(name))

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    # -- JSON ----------------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        """Atomic write: a reader never sees half a file."""
        target = self.file(name)
        tmp = target.with_suffix(target.suffix + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, target)

    def read_json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())

    def append(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        self.log(name).append(records)

    def read(self, name: str) -> Iterator[dict[str, Any]]:
        """Lines of a JSONL file; a torn last line (killed mid-write) is skipped."""
        return self.log(name).read()

    def truncate_after(self, name: str, iteration: int, key: str = "iteration") -> None:
        """Drop records of iterations after `iteration` (and a torn last line)."""
        self.log(name).truncate_after(iteration, key)
