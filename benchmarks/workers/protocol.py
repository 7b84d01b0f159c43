"""The line protocol a step worker speaks with the benchmark that drives it.

A worker loads everything, sends ``{"event": "ready"}``, then for every ``step`` line on
stdin runs one iteration and answers ``{"event": "step", ...}``; ``stop`` makes it answer
``{"event": "done", "peak_rss_gib": ...}`` and exit. Messages go to a private copy of the
original stdout; the process's own stdout is pointed at stderr, so library prints and
progress bars never corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class Channel:
    """The worker's end: JSON messages out, commands in."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)  # anything printed from here on lands in stderr

    def send(self, event: str, **fields: Any) -> None:
        self._out.write(json.dumps({"event": event, **fields}) + "\n")
        self._out.flush()

    def commands(self) -> Iterator[str]:
        for line in sys.stdin:
            command = line.strip()
            if command:
                yield command

    def next_command(self) -> str:
        return next(self.commands(), "stop")


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**30


def memory_fields() -> dict[str, float]:
    return {"peak_rss_gib": round(peak_rss_gib(), 3), "rss_gib": round(current_rss_gib(), 3)}
