"""A benchmark's missing peer is skipped when run by path and fails under `make bench`
(`ESPL_BENCH_REQUIRE_PEERS=1`), in a real pytest run of a benchmark-shaped file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

BENCHMARK = '''
from benchmarks.peers import require

def test_with_an_absent_peer():
    require("espl_bench_no_such_peer")

def test_with_a_present_peer():
    assert require("json").dumps([1]) == "[1]"
'''


def run_benchmark_file(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_peer_bench.py").write_text(BENCHMARK)
    environment = {k: v for k, v in os.environ.items() if k != "ESPL_BENCH_REQUIRE_PEERS"}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, env=environment, timeout=120)


@pytest.mark.slow
def test_run_by_path_a_missing_peer_is_skipped_with_its_install_command(tmp_path: Path) -> None:
    done = run_benchmark_file(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "the comparison needs espl_bench_no_such_peer: pip install espl_bench_no_such_peer" in done.stdout


@pytest.mark.slow
def test_under_make_bench_a_missing_peer_fails(tmp_path: Path) -> None:
    done = run_benchmark_file(tmp_path, ESPL_BENCH_REQUIRE_PEERS="1")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "1 failed, 1 passed" in done.stdout
    assert "the peer espl_bench_no_such_peer does not import" in done.stdout


@pytest.mark.parametrize(("value", "required"), [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_the_flag(monkeypatch: pytest.MonkeyPatch, value: str | None, required: bool) -> None:
    from benchmarks.peers import REQUIRE_PEERS, peers_required

    if value is None:
        monkeypatch.delenv(REQUIRE_PEERS, raising=False)
    else:
        monkeypatch.setenv(REQUIRE_PEERS, value)
    assert peers_required() is required
