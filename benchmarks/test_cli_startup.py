"""Start-up time of `espl-bench --help` (a fresh interpreter each round)."""

from __future__ import annotations

import subprocess
import sys


def test_help_startup(benchmark) -> None:
    def run() -> None:
        subprocess.run([sys.executable, "-m", "espl.cli", "--help"], check=True, capture_output=True)

    benchmark.pedantic(run, rounds=5, iterations=1)
    benchmark.extra_info["target_s"] = 2.0
