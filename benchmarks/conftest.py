"""Shared fixtures of the comparison benchmarks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks.workers.runtime import QUICK, load_average

BENCHMARK_SELECTION = "not extended and not gpu"
"""Benchmarks take minutes by nature (most are marked `slow`): the default selection's `not
slow` keeps the quick test loop quick, and does not apply here."""


def pytest_configure(config: pytest.Config) -> None:
    """Select the benchmarks a bare `pytest benchmarks/...` names, slow ones included, unless the
    command line chose its own `-m`."""
    if not any(arg.startswith("-m") for arg in config.invocation_params.args):
        config.option.markexpr = BENCHMARK_SELECTION


@pytest.fixture
def machine_load(benchmark: Any) -> Iterator[None]:
    """Record the load average around a benchmark, and whether it ran at the quick scale."""
    before = load_average()
    yield
    benchmark.extra_info["load_average_before"] = before
    benchmark.extra_info["load_average_after"] = load_average()
    benchmark.extra_info["quick"] = QUICK
    benchmark.extra_info["torch_threads"] = _torch_threads()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()
