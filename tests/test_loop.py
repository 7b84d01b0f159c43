"""The training loop end to end: every method, run records, and exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from espl.config import load_config
from espl.methods import method_names
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import RunDir
from espl.run.train import run_training
from smoke_runs import SMOKE_ESPL, STRAIGHT_ITERATIONS

VOLATILE = {"timings", "wall_s", "eval_s", "update_s"}


def _config(method: str, model: str = "tiny-random", **overrides):
    settings = [f"method={json.dumps(method)}", f"policy.model={json.dumps(model)}", 'env.name="gsm8k"']
    settings += [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return load_config("smoke", settings)


def _stable(record):
    """A metrics record without wall-clock figures (which differ between identical runs)."""
    if isinstance(record, dict):
        return {k: _stable(v) for k, v in record.items() if k not in VOLATILE}
    if isinstance(record, list):
        return [_stable(v) for v in record]
    return record


@pytest.mark.parametrize("method", method_names())
def test_one_iteration_of_each_method_writes_a_complete_run_dir(method: str, tmp_path: Path) -> None:
    config = _config(method)
    run_dir = RunDir(tmp_path / method)
    summary = run_training(config, run_dir)
    metrics = list(run_dir.read("metrics.jsonl"))
    assert summary["method"] == method and summary["budget"]["eval_rollouts"] > 0
    if method == "base":
        assert [m["iteration"] for m in metrics] == [0]
        assert summary["budget"]["train_rollouts"] == 0
    else:
        assert [m["iteration"] for m in metrics] == [0, 1]
        expected = config.evolution.prompts_per_iteration * config.problems_per_iteration * config.samples_per_problem
        assert metrics[1]["rollouts"] == expected == summary["budget"]["train_rollouts"]
        assert ("train" in metrics[1]) == (method in ("espl", "rl"))
        assert ("mutation" in metrics[1]["evolution"]) == (method in ("espl", "evolution", "reflect"))
    rollouts = list(run_dir.read("rollouts.jsonl"))
    assert len(rollouts) == summary["budget"]["train_rollouts"] + summary["budget"]["eval_rollouts"]
    assert all(len(r["token_ids"]) == len(r["loss_mask"]) == len(r["logprobs"]) for r in rollouts)
    population = load_prompt_log(run_dir.file("prompts.jsonl"))
    assert summary["eval_prompt"]["id"] in {p.id for p in population.archive()}
    assert json.loads(run_dir.file("summary.json").read_text())["git_commit"]


EMBEDDED_TIERS = [
    pytest.param(m, marks=pytest.mark.slow if m == "espl" else pytest.mark.extended) for m in method_names()
]
"""`espl` (the embedded model as policy and as reflector) runs in CI; the other methods reuse the
same parts and run in the extended tier."""


@pytest.mark.parametrize("method", EMBEDDED_TIERS)
def test_one_iteration_with_the_embedded_model_as_policy_and_reflector(method: str, tmp_path: Path) -> None:
    # A short answer and one evaluation problem: the run needs the real model end to end, not long replies.
    # Reflecting on failures when no problem is mixed, so the reflector runs whatever the rewards.
    config = _config(method, model="smollm2-135m", eval_limit=1,
                     **{"policy.max_tokens": 16, "evolution.reflector.max_tokens": 48,
                        "evolution.reflect_on_failures": True})
    summary = run_training(config, RunDir(tmp_path / method))
    assert summary["model"] == "smollm2-135m"
    assert summary["budget"]["eval_generated_tokens"] > 0
    metrics = list(RunDir(tmp_path / method).read("metrics.jsonl"))
    if method in ("espl", "evolution", "reflect"):
        mutation = metrics[1]["evolution"]["mutation"]
        rewards = [r["reward"] for r in RunDir(tmp_path / method).read("rollouts.jsonl") if r["iteration"] == 1 and r["phase"] == "train"]
        if min(rewards) < 1.0:  # a failure to reflect on: the 135M reflector was asked, with tokens back
            assert mutation["usage"]["calls"] > 0 and mutation["usage"]["completion_tokens"] > 0
    if method in ("espl", "rl"):  # the trainer saw the batch (it steps only on mixed groups)
        train = metrics[1]["train"]
        assert train["step"] == 1 and train["reward_mean"] == pytest.approx(metrics[1]["train_reward"])


def _run_cli(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "espl.cli", "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_iteration(victim: subprocess.Popen, metrics: Path, iteration: int) -> None:
    """SIGKILL the run `victim` as soon as `iteration` is in its `metrics` (so during the next)."""
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        if metrics.exists() and any(json.loads(l)["iteration"] == iteration for l in metrics.read_text().splitlines() if l.strip()):
            break
        if victim.poll() is not None:
            pytest.fail("the run ended before it could be killed")
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(straight_espl_run: Path, tmp_path: Path) -> None:
    """Killed in iteration 2 and resumed by a new process: the records are the uninterrupted
    run's (`straight_espl_run`, the same settings, made once per session)."""
    killed_dir = tmp_path / "killed"
    victim = _run_cli([*SMOKE_ESPL, "--iterations", str(STRAIGHT_ITERATIONS), "--out", str(killed_dir)])
    metrics = killed_dir / "metrics.jsonl"
    kill_after_iteration(victim, metrics, 1)
    completed = [json.loads(l)["iteration"] for l in metrics.read_text().splitlines() if l.strip()]
    assert 1 in completed and STRAIGHT_ITERATIONS not in completed

    resumed = _run_cli(["--resume", str(killed_dir), "--quiet"])
    assert resumed.wait(timeout=900) == 0, resumed.stderr.read() if resumed.stderr else ""

    a = [_stable(json.loads(l)) for l in (straight_espl_run / "metrics.jsonl").read_text().splitlines()]
    b = [_stable(json.loads(l)) for l in metrics.read_text().splitlines()]
    assert [r["iteration"] for r in b] == [0, 1, 2, 3]
    assert a == b
    rollouts_a = (straight_espl_run / "rollouts.jsonl").read_text().splitlines()
    rollouts_b = (killed_dir / "rollouts.jsonl").read_text().splitlines()
    assert len(rollouts_a) == len(rollouts_b)
    assert [json.loads(l)["token_ids"] for l in rollouts_a] == [json.loads(l)["token_ids"] for l in rollouts_b]


def test_evolution_caps_reach_the_mutation_operator() -> None:
    from espl.evolution.operators import make_operator
    from espl.run.plan import plan_run

    config = _config("espl", **{"evolution.max_problems": 3, "evolution.max_rollouts_per_problem": 2})
    mutation, crossover = plan_run(config).operators
    operator = make_operator(mutation.name, **mutation.options)
    assert (operator.config.max_problems, operator.config.max_rollouts_per_problem) == (3, 2)
    assert (mutation.probability, crossover.probability) == (1.0, config.evolution.crossover_probability)
    assert load_config("smoke").evolution.max_rollouts_per_problem is None  # the paper's rule by default
