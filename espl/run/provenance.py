"""Where a run ran: the code's commit and the hardware, for its leaderboard row."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any


GENERATED_PATHS = ("leaderboards",)
"""Tracked files the harness itself rewrites (`compare` writes the leaderboards): a change there
is output, not code, and does not make the commit `-dirty`."""


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that ran (with `-dirty` when a tracked file other than the
    harness's own output has changes)."""
    root = Path(cwd or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":/",
             *(f":(top,exclude){path}" for path in GENERATED_PATHS)],
            cwd=root, capture_output=True, text=True, timeout=5,
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
