"""Progress output: one plain line per iteration in a log, an 80-column live line on a terminal,
and evaluation progress that moves per episode."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.rollout import RolloutConfig, RolloutDriver
from envs import registry
from espl.progress import LiveProgress, children_made, plain_line
from espl.run.evaluation import evaluate

ROOT = Path(__file__).resolve().parents[1]

WIDE_RECORD = {
    "iteration": 9999,
    "train_reward": 0.123456,
    "generated_tokens": 987_654,
    "evolution": {"match": {"played": True}, "mutation": {"child": "p9998"}, "crossover": {"child": "p9999"}},
    "eval": {"accuracy": 0.5, "pass@1": 0.5},
    "budget": {"train_rollouts": 9_999_000, "total_generated_tokens": 123_456_789},
    "wall_s": 3_600_000.0,
}


def _live_lines(progress: LiveProgress) -> list[str]:
    console = progress.console
    lines = console.render_lines(progress.progress.get_renderable(), console.options, pad=False)
    return ["".join(segment.text for segment in line).rstrip() for line in lines]


def test_the_live_line_fits_80_columns_for_a_wide_record() -> None:
    console = Console(file=io.StringIO(), width=200, force_terminal=True, color_system=None)
    progress = LiveProgress(console, total=10_000)
    assert not progress.plain
    progress.status("loading the model and the environment")
    (line,) = _live_lines(progress)
    assert cell_len(line) <= 80 and "loading the model and the environment" in line
    progress.update(WIDE_RECORD)
    (line,) = _live_lines(progress)
    assert cell_len(line) <= 80, line
    for figure in ("9999/10000", "reward 0.123", "acc 0.500", "tok 123.5M", "children 2"):
        assert figure in line, (figure, line)


def test_a_plain_line_has_every_figure_and_no_markup() -> None:
    line = plain_line({**WIDE_RECORD, "evolution": {"mutation": {"child": "p[bold]1"}}}, 10_000, 1, 12.5)
    assert line == ("iteration 9999/10000: reward 0.123, test acc 0.500, tokens 987654 (123456789 in all), "
                    "children 1, 12.5 s (3600000 s in all)")
    start = plain_line({"iteration": 0, "eval": {"accuracy": 0.25}, "budget": {}, "wall_s": 3.0}, 5, 0, 3.0)
    assert start == "iteration 0/5 (starting policy): test acc 0.250, 3.0 s"
    assert children_made({"evolution": {"gepa": {"new_candidates": [{}, {}]}, "mutation": {"child": None}}}) == 2


def test_outside_a_terminal_iterations_print_plain_lines_without_a_frame() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80)  # a file: not a terminal
    with LiveProgress(console, total=3) as progress:
        assert progress.plain
        progress.status("loading the model and the environment")
        for i in (1, 2, 3):
            progress.update({**WIDE_RECORD, "iteration": i, "wall_s": 10.0 * i})
    lines = out.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["iteration 1/3", "iteration 2/3", "iteration 3/3"]
    assert "10.0 s (20 s in all)" in lines[1] and len(lines[0]) > 80  # unwrapped, however long


@pytest.mark.slow
def test_a_real_run_logs_one_line_per_iteration_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "espl.cli", "run", "--env", "arithmetic", "--method", "espl", "--preset", "smoke",
               "--model", "tiny-random", "--iterations", "2", "--out", str(run_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    assert lines[0] == f"run directory: {run_dir}"
    assert lines[1].startswith("policy model: float32 on cpu")  # the smoke preset pins float32
    logged = lines[2 : 2 + len(records)]
    assert logged[0].startswith("iteration 0/2 (starting policy): test acc ")
    for line, record in zip(logged[1:], records[1:]):
        assert re.fullmatch(
            rf"iteration {record['iteration']}/2: reward \d\.\d{{3}}, test acc \d\.\d{{3}}, tokens \d+ \(\d+ in all\), "
            r"children \d+, \d+\.\d s \(\d+ s in all\)", line), line
        assert f"tokens {record['generated_tokens']} ({record['budget']['total_generated_tokens']} in all)" in line
    summary = lines[2 + len(records) :]
    assert summary[0] == "espl on arithmetic (tiny-random):" and "  iterations: 2" in summary
    assert summary[-1] == f"run directory: {run_dir}"
    assert not any(line.startswith("iteration ") for line in summary)
    assert not any(mark in result.stdout for mark in ("━", "\x1b", "…"))  # no progress frame, no colour, no cut


def test_evaluation_progress_moves_once_per_episode() -> None:
    engine = HFEngine("tiny-random")
    env_factory = lambda: registry.make("arithmetic", split="test")  # noqa: E731
    driver = RolloutDriver(engine, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=8)))
    tasks = driver.envs(1)[0].tasks[:3]
    calls: list[int] = []
    result = evaluate(driver, tasks, n_samples=2, batch_size=4, progress=calls.append)
    assert len(result.trajectories) == 6
    assert (result.metrics["n_tasks"], result.metrics["episodes"], result.metrics["samples_per_task"]) == (3, 6, 2)
    assert calls == [1, 2, 3, 4, 5, 6]  # not [4, 6]: one call per finished episode
