"""Comparison suites: parsing and validation, run planning, and `espl-bench compare`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from espl.cli import main
from espl.commands.compare import move_aside
from espl.suite import (
    RunStatus, SuiteError, config_diff, expand, load_suite, on_fleet, parse_suite, plan, run_status,
    with_new_defaults,
)

SUITES = Path(__file__).resolve().parent.parent / "espl" / "suites"


def _suite(**changes: Any) -> dict[str, Any]:
    data = {
        "name": "tiny", "preset": "smoke", "envs": ["gsm8k"], "methods": ["base", "espl"], "seeds": [0, 1],
        "overrides": {"policy.model": "tiny-random", "iterations": 1},
    }
    data.update(changes)
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if k != "overrides"]
    lines.append("[overrides]")
    lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in data.get("overrides", {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("name", ["math-cpu", "hotpotqa-cpu"])
def test_the_shipped_suites_cover_every_method_with_three_seeds(name: str) -> None:
    from espl.methods import method_names

    suite = load_suite(SUITES / f"{name}.toml")
    assert suite.name == name and set(suite.methods) == set(method_names()) and suite.seeds == (0, 1, 2)
    specs = expand(suite)
    assert len(specs) == len(suite.envs) * len(method_names()) * 3
    assert all(s.config.policy.model == "smollm2-135m" and s.config.iterations == suite.overrides["iterations"] for s in specs)
    assert load_suite(name).source == suite.source  # a bare name finds the shipped file


def test_expansion_sets_env_method_seed_and_a_fixed_run_dir(tmp_path: Path) -> None:
    suite = parse_suite(_suite(envs=["gsm8k", "espl/MATH500-v0"]))
    specs = expand(suite, tmp_path)
    assert [s.label for s in specs[:4]] == ["gsm8k--base--seed0", "gsm8k--base--seed1", "gsm8k--espl--seed0", "gsm8k--espl--seed1"]
    assert specs[-1].run_dir == tmp_path / "tiny" / "espl_MATH500-v0--espl--seed1"
    last = specs[-1].config
    assert (last.env.name, last.method, last.seed, last.iterations, last.policy.model) == (
        "espl/MATH500-v0", "espl", 1, 1, "tiny-random")
    assert last.eval_limit == 2  # from the smoke preset, not overridden


def test_overrides_may_be_dotted_keys_or_tables() -> None:
    overrides = {"policy": {"model": "tiny-random", "max_tokens": 7}, "rl.lr": 0.5, "env": {"kwargs": {"a": 1}}, "env.kwargs.b": 2}
    config = expand(parse_suite(_suite(overrides=overrides)))[0].config
    assert config.policy.max_tokens == 7 and config.rl.lr == 0.5 and config.policy.model == "tiny-random"
    assert config.env.kwargs == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ["espl", "dpo"]}, "unknown method(s) dpo"),
        ({"envs": ["gsm8k", "nonsense-env"]}, "unknown env(s) nonsense-env"),
        ({"seeds": []}, "seeds must be a non-empty list"),
        ({"seeds": [0, 0]}, "seeds lists 0 more than once"),
        ({"methods": "espl"}, "methods must be a non-empty list"),
        ({"overrides": {"method": "rl"}}, "set per run by the suite"),
        ({"overrides": {"policy.modle": "x"}}, "policy.modle"),
        ({"overrides": {"iterations": "many"}}, "iterations must be int"),
        ({"preset": "no-such-preset"}, "no preset 'no-such-preset'"),
        ({"budget": 3}, "unknown suite key(s) ['budget']"),
        ({"name": "a/b"}, "suite name"),
    ],
)
def test_bad_suites_are_clear_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SuiteError) as error:
        parse_suite(_suite(**changes))
    assert message in str(error.value)


def test_load_suite_names_the_file_in_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "bad.toml", _suite(methods=["nope"]))
    with pytest.raises(SuiteError, match=r"bad\.toml: unknown method"):
        load_suite(path)
    (tmp_path / "broken.toml").write_text("envs = [")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(tmp_path / "broken.toml")
    with pytest.raises(SuiteError, match="built-in suites: .*math-cpu"):
        load_suite("no-such-suite")


def _finish(spec, accuracy: float = 0.5) -> None:
    """Make a spec's directory look like a finished run with the suite's config."""
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    (spec.run_dir / "config.json").write_text(json.dumps(spec.expected_config()))
    summary = {
        "env": spec.env, "method": spec.method, "model": "tiny-random", "seed": spec.seed, "iterations": 1,
        "budget": {"train_rollouts": 4}, "wall_s": 1.0, "hardware": {"cpu_count": 2, "torch": "2.13.0"},
        "git_commit": "abc", "final": {"accuracy": accuracy}, "best": {"accuracy": accuracy},
        "eval_prompt": {"id": "p0000", "principles": []}, "prompts_created": 1,
    }
    (spec.run_dir / "summary.json").write_text(json.dumps(summary))
    (spec.run_dir / "metrics.jsonl").write_text(json.dumps({"iteration": 0, "eval": {"accuracy": accuracy}}) + "\n")


def test_plan_tells_finished_partial_missing_and_stale(tmp_path: Path) -> None:
    suite = parse_suite(_suite())
    base0, base1, espl0, espl1 = expand(suite, tmp_path)
    _finish(base0)
    espl0.run_dir.mkdir(parents=True)  # resumable: matching config and a checkpoint, no summary
    (espl0.run_dir / "config.json").write_text(json.dumps(espl0.expected_config()))
    (espl0.run_dir / "checkpoint").mkdir()
    (espl0.run_dir / "checkpoint" / "loop.json").write_text("{}")
    _finish(espl1)
    stale = espl1.expected_config() | {"iterations": 9}
    (espl1.run_dir / "config.json").write_text(json.dumps(stale))
    statuses = {p.spec.label: p.status for p in plan(suite, tmp_path)}
    assert statuses == {
        "gsm8k--base--seed0": RunStatus.FINISHED, "gsm8k--base--seed1": RunStatus.MISSING,
        "gsm8k--espl--seed0": RunStatus.PARTIAL, "gsm8k--espl--seed1": RunStatus.STALE,
    }
    assert config_diff(espl1.expected_config(), stale) == ["iterations: 9 -> 1"]


def test_a_run_older_than_a_setting_is_stale_only_if_the_suite_wants_another_value(tmp_path: Path) -> None:
    suite = parse_suite(_suite())
    base0, *_ = expand(suite, tmp_path)
    _finish(base0)
    older = base0.expected_config()
    del older["evolution"]["max_problems"]  # recorded before the setting existed
    (base0.run_dir / "config.json").write_text(json.dumps(older))
    assert run_status(base0) is RunStatus.FINISHED
    wanting = parse_suite(_suite(overrides={**_suite()["overrides"], "evolution.max_problems": 2}))
    spec = expand(wanting, tmp_path)[0]
    assert spec.run_dir == base0.run_dir and run_status(spec) is RunStatus.STALE


def test_a_run_older_than_a_behaviour_changing_default_is_stale_until_the_suite_asks_for_the_old_way(
    tmp_path: Path,
) -> None:
    suite = parse_suite(_suite())
    base0, *_ = expand(suite, tmp_path)
    _finish(base0)
    older = base0.expected_config()
    del older["evolution"]["verbatim_words"]  # mutation summarised every rollout back then
    (base0.run_dir / "config.json").write_text(json.dumps(older))
    assert run_status(base0) is RunStatus.STALE
    assert config_diff(base0.expected_config(), with_new_defaults(older)) == ["evolution.verbatim_words: 0 -> 80"]
    old_way = parse_suite(_suite(overrides={**_suite()["overrides"], "evolution.verbatim_words": 0}))
    assert run_status(expand(old_way, tmp_path)[0]) is RunStatus.FINISHED


def test_where_a_run_is_reported_leaves_it_finished(tmp_path: Path) -> None:
    suite = parse_suite(_suite())
    base0, *_ = expand(suite, tmp_path)
    _finish(base0)
    tracked = parse_suite(_suite(overrides={**_suite()["overrides"], "report_to": ["tensorboard"]}))
    spec = expand(tracked, tmp_path)[0]
    assert spec.config.report_to == ["tensorboard"] and run_status(spec) is RunStatus.FINISHED
    longer = parse_suite(_suite(overrides={**_suite()["overrides"], "report_to": ["tensorboard"], "iterations": 2}))
    assert run_status(expand(longer, tmp_path)[0]) is RunStatus.STALE


def test_where_the_fleet_listens_leaves_a_run_finished_and_what_it_serves_does_not(tmp_path: Path) -> None:
    fleet = _suite(overrides={**_suite()["overrides"], "policy.engine": "fleet"})
    first = on_fleet(parse_suite(fleet), ["http://10.0.0.1:8001"])
    spec = expand(first, tmp_path)[0]
    _finish(spec)
    moved = expand(on_fleet(parse_suite(fleet), ["http://10.0.0.7:9001", "http://10.0.0.8:9001"]), tmp_path)[0]
    assert moved.config.policy.base_urls == ["http://10.0.0.7:9001", "http://10.0.0.8:9001"]
    assert run_status(moved) is RunStatus.FINISHED
    elsewhere = {"env.retriever_url": "http://10.0.0.7:8000", "evolution.reflector.base_urls": ["http://10.0.0.9:8001"]}
    retriever_moved = parse_suite(_suite(overrides={**fleet["overrides"], **elsewhere}))
    assert run_status(expand(on_fleet(retriever_moved, ["http://10.0.0.7:9001"]), tmp_path)[0]) is RunStatus.FINISHED
    other_model = parse_suite(_suite(overrides={**fleet["overrides"], "policy.model": "smollm2-135m"}))
    assert run_status(expand(on_fleet(other_model, ["http://10.0.0.7:9001"]), tmp_path)[0]) is RunStatus.STALE


def test_compare_dry_run_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_file = _write(tmp_path / "tiny.toml", _suite())
    assert main(["compare", "--suite", str(suite_file), "--root", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("missing") == 4 and not (tmp_path / "runs").exists()


def test_compare_refuses_stale_runs_and_moves_them_aside_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suite_file = _write(tmp_path / "tiny.toml", _suite(methods=["base"], seeds=[0]))
    (spec,) = expand(load_suite(suite_file), tmp_path / "runs")
    _finish(spec)
    (spec.run_dir / "config.json").write_text(json.dumps(spec.expected_config() | {"seed": 5}))
    assert main(["compare", "--suite", str(suite_file), "--root", str(tmp_path / "runs")]) == 2
    assert "seed: 5 -> 0" in capsys.readouterr().out
    moved = move_aside(spec.run_dir)
    assert moved.name == "gsm8k--base--seed0.stale-1" and (moved / "summary.json").exists() and not spec.run_dir.exists()


def test_compare_on_a_finished_suite_runs_nothing_and_rewrites_identical_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_file = _write(tmp_path / "tiny.toml", _suite())
    root, boards = tmp_path / "runs", tmp_path / "boards"
    for index, spec in enumerate(expand(load_suite(suite_file), root)):
        _finish(spec, accuracy=0.1 * index)
    args = ["compare", "--suite", str(suite_file), "--root", str(root), "--out-dir", str(boards), "--quiet"]
    assert main(args) == 0
    assert "nothing to run" in capsys.readouterr().out
    files = sorted(p for p in boards.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"tiny.md", "tiny.csv", "tiny.html", "accuracy-gsm8k.png", "accuracy-gsm8k.svg"}
    first = {p: p.read_bytes() for p in files}
    summaries = {p: p.stat().st_mtime_ns for p in root.rglob("summary.json")}
    assert main(args) == 0
    assert {p: p.read_bytes() for p in sorted(p for p in boards.rglob("*") if p.is_file())} == first
    assert {p: p.stat().st_mtime_ns for p in root.rglob("summary.json")} == summaries
    assert "| gsm8k | espl | tiny-random | 2 | 25.0 ± 5.0 |" in (boards / "tiny.md").read_text()


@pytest.mark.slow
def test_compare_runs_a_real_suite_resumes_a_killed_run_and_then_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    suite_file = _write(tmp_path / "real.toml", _suite(name="real", methods=["base", "reflect"], seeds=[0]))
    root, boards = tmp_path / "runs", tmp_path / "boards"
    args = ["compare", "--suite", str(suite_file), "--root", str(root), "--out-dir", str(boards), "--quiet"]
    assert main([*args, "--jobs", "2"]) == 0  # both runs at once
    base, reflect = expand(load_suite(suite_file), root)
    assert all(p.status is RunStatus.FINISHED for p in plan(load_suite(suite_file), root))
    assert json.loads((reflect.run_dir / "summary.json").read_text())["budget"]["train_rollouts"] == 8
    board = {p: p.read_bytes() for p in boards.rglob("*") if p.is_file()}
    assert "| gsm8k | reflect | tiny-random | 1 |" in (boards / "real.md").read_text()

    # a run killed after its last checkpoint but before its summary: compare resumes it in process
    summary = (reflect.run_dir / "summary.json").read_text()
    metrics = (reflect.run_dir / "metrics.jsonl").read_text()
    (reflect.run_dir / "summary.json").unlink()
    assert plan(load_suite(suite_file), root)[1].status is RunStatus.PARTIAL
    capsys.readouterr()
    assert main(args) == 0
    assert "gsm8k--reflect--seed0: done" in capsys.readouterr().out
    assert (reflect.run_dir / "metrics.jsonl").read_text() == metrics  # no iteration ran again
    assert json.loads((reflect.run_dir / "summary.json").read_text()) == json.loads(summary)
    assert {p: p.read_bytes() for p in boards.rglob("*") if p.is_file()} == board

    assert main(args) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in boards.rglob("*") if p.is_file()} == board
