"""The `gepa` method end to end with real engines: same budget as `evolution`, complete run dir.

The run with the embedded model as policy and reflector is `tests/test_loop.py`'s
per-method test, which covers `gepa` with the other methods.

Budget granularity: GEPA spends exactly the training rollouts `evolution` spends on the same
config. When GEPA's next evaluation does not fit, the adapter runs the rollouts that still
fit and GEPA drops that evaluation, so the counts are equal, not merely close.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gepa")

from agents.trajectory import Trajectory
from espl.config import load_config
from espl.gepa.feedback import EnvFeedback
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import RunDir
from espl.run.train import run_training


def _config(method: str, env: str, model: str = "tiny-random", *extra: str):
    return load_config("smoke", [f'method="{method}"', f'env.name="{env}"', f'policy.model="{model}"', *extra])


def _check_run_dir(run_dir: RunDir, config) -> dict:
    summary = json.loads(run_dir.file("summary.json").read_text())
    per_iteration = config.evolution.prompts_per_iteration * config.problems_per_iteration * config.samples_per_problem
    assert summary["method"] == "gepa" and summary["env"] == config.env.name
    assert summary["budget"]["train_rollouts"] == config.iterations * per_iteration
    assert summary["budget"]["reflector_calls"] >= 1 and summary["budget"]["reflector_prompt_tokens"] > 0
    assert summary["budget"]["eval_rollouts"] == 2 * config.eval_limit * config.eval_samples  # iterations 0 and 1
    assert summary["iterations"] == config.iterations and "accuracy" in summary["final"]
    metrics = list(run_dir.read("metrics.jsonl"))
    assert [m["iteration"] for m in metrics] == list(range(config.iterations + 1))
    assert all(m["rollouts"] == per_iteration for m in metrics[1:])
    rollouts = list(run_dir.read("rollouts.jsonl"))
    assert len(rollouts) == summary["budget"]["train_rollouts"] + summary["budget"]["eval_rollouts"]
    population = load_prompt_log(run_dir.file("prompts.jsonl"))
    assert population.get(summary["eval_prompt"]["id"]).text == summary["eval_prompt"]["text"]
    final_eval = [r for r in rollouts if r["phase"] == "eval" and r["iteration"] == config.iterations]
    assert {r["system_prompt"] for r in final_eval} == {summary["eval_prompt"]["text"]}
    return summary


@pytest.mark.slow
def test_gepa_on_gsm8k_spends_the_training_budget_of_evolution(tmp_path: Path) -> None:
    config = _config("gepa", "gsm8k")
    run_training(config, RunDir(tmp_path / "gepa"))
    summary = _check_run_dir(RunDir(tmp_path / "gepa"), config)
    evolution = run_training(_config("evolution", "gsm8k"), RunDir(tmp_path / "evolution"))
    assert summary["budget"]["train_rollouts"] == evolution["budget"]["train_rollouts"] == 8
    assert summary["budget"]["eval_rollouts"] == evolution["budget"]["eval_rollouts"]
    assert set(summary) >= set(evolution)


@pytest.mark.extended
def test_gepa_on_hotpotqa_reflects_on_search_feedback(tmp_path: Path) -> None:
    """A second GEPA run, on the search env. `make test` runs GEPA end to end above (and
    on arithmetic and coin in test_golden_runs), a hotpotqa run against the local retrieval
    server in test_golden_runs, and the search feedback text in test_gepa_units."""
    # One search per episode and short turns keep the tiny model's episodes brief.
    config = _config("gepa", "hotpotqa", "tiny-random", "env.kwargs={max_searches=1}", "policy.max_tokens=24", "eval_limit=1")
    run_dir = RunDir(tmp_path / "gepa")
    run_training(config, run_dir)
    _check_run_dir(run_dir, config)
    train = [r for r in run_dir.read("rollouts.jsonl") if r["phase"] == "train"]
    assert any("golds" in r["info"] and "retrieved" in r["info"] for r in train)
    records = [{k: v for k, v in r.items() if k not in ("iteration", "phase")} for r in train]
    feedback = [EnvFeedback().feedback(Trajectory.from_record(r)) for r in records]
    assert any("Reference answer:" in f and "Exact match:" in f for f in feedback)
