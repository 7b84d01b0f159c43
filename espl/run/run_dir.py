"""The run directory: everything needed to resume a run and to rebuild its leaderboard row.

    config.json        the resolved configuration
    metrics.jsonl      one line per iteration (train reward per prompt, losses, tokens, timings,
                       test accuracy and pass@k at the evaluation interval)
    rollouts.jsonl     every trajectory, tagged with its iteration and phase (train / eval)
    prompts.jsonl      the prompt population, ratings and lineage (espl.evolution.population.PromptLog)
    checkpoint/        trainer and loop state after the last completed iteration
    summary.json       model, method, env, seed, budget, hardware, wall time, git commit, scores

Appends are flushed and fsynced, so a killed run loses at most the iteration in flight; on
resume, lines of iterations after the checkpoint are cut away before the run continues.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

CONFIG = "config.json"
METRICS = "metrics.jsonl"
ROLLOUTS = "rollouts.jsonl"
PROMPTS = "prompts.jsonl"
SUMMARY = "summary.json"
CHECKPOINT = "checkpoint"
LOOP_STATE = "loop.json"


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

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
        with self.file(name).open("a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, name: str) -> Iterator[dict[str, Any]]:
        """Lines of a JSONL file; a torn last line (killed mid-write) is skipped."""
        path = self.file(name)
        if not path.exists():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines) - 1:
                    return
                raise

    def truncate_after(self, name: str, iteration: int, key: str = "iteration") -> None:
        """Drop records of iterations after `iteration` (and a torn last line)."""
        path = self.file(name)
        if not path.exists():
            return
        kept = [r for r in self.read(name) if int(r.get(key, -1)) <= iteration]
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in kept))
        os.replace(tmp, path)


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that ran (with `-dirty` when the tree has changes)."""
    root = Path(cwd or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def hardware() -> dict[str, Any]:
    """What the run ran on, for the leaderboard's hardware column."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return info
