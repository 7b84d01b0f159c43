"""Shared test settings: a quiet, offline, CPU-only environment, and the runs several test files
compare against (made once per session)."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def straight_espl_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted `espl` smoke run (tests/smoke_runs.py), shared by the resume and extension tests."""
    from smoke_runs import run_straight

    return run_straight(tmp_path_factory.mktemp("straight") / "run")
