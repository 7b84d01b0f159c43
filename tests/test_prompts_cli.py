"""`espl-bench prompts`: the population, lineage and best principles, from a run directory alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espl.cli import main
from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog
from espl.evolution.system_prompt import RatingPoint, SystemPrompt


def _prompt(pid: str, parents: tuple[str, ...], operator: str, step: int, mu: float, sigma: float) -> SystemPrompt:
    return SystemPrompt(pid, (f"Principle of {pid}.", "Answer briefly."), parents, operator, step,
                        rating_history=[RatingPoint(step, mu, sigma, operator)])


@pytest.fixture
def evolved_run(tmp_path: Path) -> Path:
    """Four prompts in a population of capacity 3 (so the seed is evicted), one crossover."""
    run = tmp_path / "run"
    run.mkdir()
    population, log = Population(capacity=3), PromptLog.open(run / "prompts.jsonl")
    steps = [
        _prompt("p0000", (), "seed", 0, 25.0, 8.0),
        _prompt("p0001", ("p0000",), "mutation", 1, 30.0, 2.0),  # mu - 2 sigma = 26: the best
        _prompt("p0002", ("p0001",), "mutation", 2, 31.0, 5.0),  # 21
        _prompt("p0003", ("p0001", "p0002"), "crossover", 3, 28.0, 4.0),  # 20: the newest
    ]
    for step, prompt in enumerate(steps):
        population.add(prompt)
        log.append_step(population, step)
    (run / "config.json").write_text(json.dumps({"method": "evolution", "evolution": {"eval_prompt": "best"}}))
    return run


def _view(run: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["prompts", str(run), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_members_ratings_and_conservative_scores(evolved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = _view(evolved_run, capsys=capsys)
    assert [p["id"] for p in view["prompts"]] == ["p0001", "p0002", "p0003"]
    best = view["prompts"][0]
    assert (best["operator"], best["parents"], best["step"], best["mu"], best["sigma"]) == ("mutation", ["p0000"], 1, 30.0, 2.0)
    assert best["conservative"] == pytest.approx(26.0)
    assert view["prompts"][2]["parents"] == ["p0001", "p0002"]
    assert (view["members"], view["created"], view["finished"]) == (3, 4, False)


def test_all_includes_evicted_prompts(evolved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = _view(evolved_run, "--all", capsys=capsys)
    seed = view["prompts"][0]
    assert seed["id"] == "p0000" and seed["member"] is False and seed["evicted_step"] == 3


def test_without_a_summary_the_config_rule_picks_the_evaluated_prompt(evolved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    view = _view(evolved_run, capsys=capsys)
    assert view["eval_prompt"] == view["best_prompt"] == "p0001"  # best by mu - 2 sigma
    assert view["lineage"]["tree"] == [
        "p0001 [mutation, step 1, mu 30.00 ± 2.00]",
        "  └─ p0000 [seed, step 0, mu 25.00 ± 8.00]",
    ]
    (evolved_run / "config.json").write_text(json.dumps({"method": "espl", "evolution": {"eval_prompt": "newest"}}))
    assert _view(evolved_run, capsys=capsys)["eval_prompt"] == "p0003"  # the run's own rule: the newest


def test_the_summary_names_the_evaluated_prompt(evolved_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = {"method": "evolution", "env": "gsm8k", "eval_prompt": {"id": "p0003", "principles": []}}
    (evolved_run / "summary.json").write_text(json.dumps(summary))
    view = _view(evolved_run, capsys=capsys)
    assert view["eval_prompt"] == "p0003" and view["finished"]
    assert sorted(map(tuple, view["lineage"]["edges"])) == [
        ("p0000", "p0001"), ("p0001", "p0002"), ("p0001", "p0003"), ("p0002", "p0003")]
    assert list(view["principles"]) == ["p0003", "p0001"]
    assert view["principles"]["p0003"] == ["Principle of p0003.", "Answer briefly."]


def test_tables_and_text(evolved_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["prompts", str(evolved_run), "--all"]) == 0
    out = capsys.readouterr().out
    assert "evicted@3" in out and "crossover" in out
    assert "lineage of the evaluated prompt p0001" in out
    assert "G0. Principle of p0001." in out


def test_a_folder_without_a_prompt_log_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prompts", str(tmp_path)]) == 2
    assert "has no prompts.jsonl" in capsys.readouterr().out


@pytest.mark.slow
def test_prompts_of_a_real_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from espl.config import load_config
    from espl.run.run_dir import RunDir
    from espl.run.train import run_training

    config = load_config("smoke", ['policy.model="tiny-random"', 'env.name="gsm8k"', 'method="evolution"', "seed=1"])
    summary = run_training(config, RunDir(tmp_path / "run"))
    view = _view(tmp_path / "run", "--all", capsys=capsys)
    assert view["method"] == "evolution" and view["finished"]
    assert view["eval_prompt"] == summary["eval_prompt"]["id"]
    assert view["principles"][view["eval_prompt"]] == summary["eval_prompt"]["principles"]
    assert view["created"] == summary["prompts_created"] == len(view["prompts"])
    seed = view["prompts"][0]
    assert seed["operator"] == "seed" and seed["mu"] is not None and seed["conservative"] == pytest.approx(seed["mu"] - 2 * seed["sigma"])
    assert main(["prompts", str(tmp_path / "run")]) == 0
    assert "principles of " + summary["eval_prompt"]["id"] in capsys.readouterr().out
