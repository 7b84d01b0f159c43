"""The tiny model's `espl` smoke run that the resume and extension tests compare against.

It is run once per test session (the `straight_espl_run` fixture in conftest.py): SIGKILL then
`--resume` (tests/test_loop.py) and `--resume --iterations` (tests/test_extend.py) must each
end with the same records as this uninterrupted run of the same settings."""

from __future__ import annotations

from pathlib import Path

SMOKE_ESPL = ["--env", "gsm8k", "--method", "espl", "--preset", "smoke", "--model", "tiny-random", "--quiet",
              "--set", "problems_per_iteration=3"]
"""The smoke preset evaluates every iteration (eval_every = 1), so a 2-iteration run evaluates
nothing a 3-iteration run would not (see `espl.run.extension` for when it does)."""

STRAIGHT_ITERATIONS = 3


def run_straight(out: Path) -> Path:
    """An uninterrupted run of `STRAIGHT_ITERATIONS` iterations, in this process."""
    from espl.cli import main

    assert main(["run", *SMOKE_ESPL, "--iterations", str(STRAIGHT_ITERATIONS), "--out", str(out)]) == 0
    return out
