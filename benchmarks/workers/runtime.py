"""Run-wide benchmark settings: the quick (smoke) scale and the machine's load."""

from __future__ import annotations

import os

QUICK = os.environ.get("ESPL_BENCH_QUICK", "").strip().lower() not in ("", "0", "false", "no")
"""`ESPL_BENCH_QUICK=1`: a scaled-down run that checks the benchmarks end to end in minutes."""


def scale(full: int, quick: int) -> int:
    return quick if QUICK else full


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: a shared machine skews every absolute figure."""
    return [round(value, 2) for value in os.getloadavg()]
