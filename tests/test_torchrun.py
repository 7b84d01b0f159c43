"""`torchrun --nproc-per-node 2 -m espl.cli run`: a smoke run on two gloo ranks, and a resume after a kill.

Every group of the tiny random model gets the same reward, so the runs keep every group
(`rl.advantage_mode = "dr_grpo"`): each iteration then takes a trainer step on both ranks.
The step itself is compared with one process's in `tests/test_rl_distributed.py`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_loop import VOLATILE

COMMON = [
    "--env", "gsm8k", "--method", "espl", "--preset", "smoke", "--model", "tiny-random", "--quiet",
    "--set", 'rl.advantage_mode="dr_grpo"', "--set", "problems_per_iteration=3",
]


def _torchrun(args: list[str]) -> subprocess.Popen:
    """Two ranks on this host, under `torchrun`'s launcher (`--standalone`: its rendezvous on a free local port)."""
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "espl.cli", "run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output
    return output


def stable(record):
    """A metrics record without wall-clock figures (which differ between identical runs)."""
    if isinstance(record, dict):
        return {k: stable(v) for k, v in record.items() if k not in VOLATILE}
    if isinstance(record, list):
        return [stable(v) for v in record]
    return record


def _ranks_of(launcher: int) -> list[int]:
    """The processes the launcher started (the ranks run in sessions of their own)."""
    tasks = Path(f"/proc/{launcher}/task")
    return [int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()]


def _iterations(run_dir: Path) -> list[int]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if line.strip()]


@pytest.mark.slow
def test_a_smoke_run_on_two_ranks_trains_on_rank_0s_batches(tmp_path: Path) -> None:
    output = _finish(_torchrun([*COMMON, "--out", str(tmp_path / "run")]))
    assert output.count("run directory:") == 2  # rank 0 prints (at the start and the end); the other rank never
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    assert metrics[1]["train"]["sequences"] == metrics[1]["rollouts"] > 0  # a step on every rollout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["budget"]["optimizer_steps"] == 1
    assert (tmp_path / "run" / "checkpoint" / "trainer" / "trainer.pt").exists()


@pytest.mark.extended
def test_a_killed_two_rank_run_resumes_as_if_never_stopped(tmp_path: Path) -> None:
    common = [*COMMON, "--iterations", "3", "--set", "eval_every=3"]
    _finish(_torchrun([*common, "--out", str(tmp_path / "straight")]))

    killed = tmp_path / "killed"
    victim = _torchrun([*common, "--out", str(killed)])
    deadline = time.monotonic() + 900
    while not ((killed / "metrics.jsonl").exists() and 1 in _iterations(killed)):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    for rank in _ranks_of(victim.pid):  # both ranks at once, mid-iteration 2; the launcher then exits
        os.kill(rank, signal.SIGKILL)
    victim.communicate(timeout=300)
    assert victim.returncode != 0
    assert 3 not in _iterations(killed)

    _finish(_torchrun(["--resume", str(killed), "--quiet"]))
    straight = [stable(json.loads(line)) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [stable(json.loads(line)) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in resumed] == [0, 1, 2, 3]
    assert resumed == straight
