"""`run --resume DIR --iterations N`: a finished run extended to N equals a run started with N;
a killed run extends as it resumes; shortening, non-iterating methods, a spent budget and
any override but the servers' new addresses are refused, and an equal N says there is nothing
to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from espl.cli import main
from espl.files.atomic import readable_directory
from smoke_runs import SMOKE_ESPL as COMMON
from tests.test_loop import _run_cli, _stable, kill_after_iteration


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def straight_and_extended(straight_espl_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The session's straight 3-iteration run, a 2-iteration run, and a copy of it extended to 3."""
    root = tmp_path_factory.mktemp("extend")
    assert main(["run", *COMMON, "--iterations", "2", "--out", str(root / "short")]) == 0
    shutil.copytree(root / "short", root / "extended")
    assert main(["run", "--resume", str(root / "extended"), "--iterations", "3", "--quiet"]) == 0
    return straight_espl_run, root / "short", root / "extended"


@pytest.mark.slow
def test_a_finished_run_extended_equals_a_straight_run(straight_and_extended: tuple[Path, Path, Path]) -> None:
    straight, short, extended = straight_and_extended
    a = [_stable(r) for r in lines(straight / "metrics.jsonl")]
    b = [_stable(r) for r in lines(extended / "metrics.jsonl")]
    assert [r["iteration"] for r in b] == [0, 1, 2, 3] and a == b
    assert [r["token_ids"] for r in lines(straight / "rollouts.jsonl")] == [r["token_ids"] for r in lines(extended / "rollouts.jsonl")]
    assert (straight / "prompts.jsonl").read_text() == (extended / "prompts.jsonl").read_text()

    config = json.loads((extended / "config.json").read_text())
    assert config == json.loads((straight / "config.json").read_text()) and config["iterations"] == 3
    summary = json.loads((extended / "summary.json").read_text())
    assert summary["iterations"] == 3 and _stable(summary["final"]) == _stable(json.loads((straight / "summary.json").read_text())["final"])
    assert [(e["from"], e["to"], e["after_iteration"]) for e in summary["extended"]] == [(2, 3, 2)]
    before = json.loads((extended / "summary-at-2.json").read_text())  # the shorter run's row, kept
    assert before == json.loads((short / "summary.json").read_text()) and before["iterations"] == 2


@pytest.mark.slow
def test_an_equal_count_has_nothing_to_do_and_a_smaller_one_is_refused(
    straight_and_extended: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    extended = straight_and_extended[2]
    metrics = (extended / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["run", "--resume", str(extended), "--iterations", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "nothing to do" in out and "final test accuracy" not in out
    assert main(["run", "--resume", str(extended), "--iterations", "2", "--quiet"]) == 2
    assert "never shortened" in capsys.readouterr().out
    assert (extended / "metrics.jsonl").read_text() == metrics


def fake_progress(run_dir: Path, config: dict, done: int, train_rollouts: int = 0) -> Path:
    """A run directory as a run leaves it after `done` iterations, as far as the checks read it
    (they run before any model loads, so no model is needed to exercise them)."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checkpoint").mkdir()
    budget = {"train_rollouts": train_rollouts}
    (run_dir / "checkpoint" / "loop.json").write_text(json.dumps({"iteration": done, "budget": budget, "wall_s": 0.0, "evals": []}))
    return run_dir


@pytest.mark.parametrize(
    ("method", "settings", "done", "spent", "message"),
    [
        ("base", {}, 0, 0, "runs no iterations"),
        ("gepa", {}, 2, 8, "cannot be resumed"),
        ("rl", {"max_rollouts": 8}, 1, 8, "stopped at its budget of 8"),
    ],
)
def test_runs_that_cannot_go_on_are_refused_before_anything_loads(
    method: str, settings: dict, done: int, spent: int, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from espl.config import load_config

    config = load_config("smoke", [f'method="{method}"', 'policy.model="tiny-random"', 'env.name="gsm8k"', "iterations=2",
                                   *(f"{k}={v}" for k, v in settings.items())]).to_dict()
    run_dir = fake_progress(tmp_path / "run", config, done, spent)
    assert main(["run", "--resume", str(run_dir), "--iterations", "5", "--quiet"]) == 2
    assert message in capsys.readouterr().out
    assert json.loads((run_dir / "config.json").read_text())["iterations"] == 2
    assert not (run_dir / "extensions.jsonl").exists()


def test_other_overrides_on_resume_stay_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from espl.config import load_config

    config = load_config("smoke", ['policy.model="tiny-random"', 'env.name="gsm8k"']).to_dict()
    run_dir = fake_progress(tmp_path / "run", config, 1)
    assert main(["run", "--resume", str(run_dir), "--iterations", "5", "--set", "rl.lr=1e-3"]) == 2
    assert "--set rl.lr would be ignored" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir), "--iterations", "5", "--seed", "0"]) == 2
    assert "--seed would be ignored" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir), "--iterations", "5", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["iterations"] == 5
    assert json.loads((run_dir / "config.json").read_text())["iterations"] == 1  # a dry run writes nothing


def test_a_resumed_run_takes_new_server_addresses_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Where its servers listen may change (a fleet started again), what the run does may not."""
    from espl.config import load_config

    config = load_config("smoke", ['policy.model="tiny-random"', 'env.name="hotpotqa"', "policy.engine=fleet",
                                   'policy.base_urls=["http://127.0.0.1:8001"]',
                                   'env.retriever_url="http://127.0.0.1:8000"',
                                   'evolution.reflector.engine="openai"', 'evolution.reflector.model="tiny-random"',
                                   'evolution.reflector.base_urls=["http://127.0.0.1:8003"]'])
    run_dir = fake_progress(tmp_path / "run", config.to_dict(), 1)
    moved = ['policy.base_urls=["http://127.0.0.1:9001", "http://127.0.0.1:9002"]',
             'env.retriever_url="http://127.0.0.1:9000"', 'evolution.reflector.base_urls=["http://127.0.0.1:9003"]',
             "policy.engine=fleet"]
    assert main(["run", "--resume", str(run_dir), "--dry-run", *(f for item in moved for f in ("--set", item))]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["policy"]["base_urls"] == ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]
    assert resolved["env"]["retriever_url"] == "http://127.0.0.1:9000"
    assert resolved["evolution"]["reflector"]["base_urls"] == ["http://127.0.0.1:9003"]
    resolved["policy"]["base_urls"] = config.policy.base_urls
    resolved["env"]["retriever_url"] = config.env.retriever_url
    resolved["evolution"]["reflector"]["base_urls"] = config.evolution.reflector.base_urls
    recorded = json.loads(json.dumps(config.to_dict()))
    assert resolved == recorded, "nothing else changed"
    assert json.loads((run_dir / "config.json").read_text()) == recorded, "a dry run writes nothing"

    assert main(["run", "--resume", str(run_dir), "--set", "policy.engine=hf"]) == 2
    assert "--set policy.engine=hf: the run recorded 'fleet', and a resumed run keeps it" in capsys.readouterr().out
    assert main(["run", "--resume", str(run_dir), "--set", 'policy.base_urls=["http://a:1"]', "--set", "rl.lr=1e-3",
                 "--set", 'policy.model="smollm2-135m"']) == 2
    out = capsys.readouterr().out
    assert "--set rl.lr, policy.model would be ignored" in out and "policy.base_urls, env.retriever_url" in out
    assert len(out.strip().splitlines()) == 1


@pytest.mark.extended  # its parts run in `make test`: the SIGKILL and resume in tests/test_loop.py
# (test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run), the extension in the first test above
def test_a_killed_run_extends_as_it_resumes(straight_and_extended: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A 2-iteration run killed in iteration 2, extended to 3, equals the straight 3-iteration run."""
    killed = tmp_path / "killed"
    victim = _run_cli([*COMMON, "--iterations", "2", "--out", str(killed)])
    metrics = killed / "metrics.jsonl"
    kill_after_iteration(victim, metrics, 1)  # killed in iteration 2
    assert 2 not in [r["iteration"] for r in lines(metrics)] and not (killed / "summary.json").exists()
    checkpointed = json.loads((readable_directory(killed / "checkpoint") / "loop.json").read_text())["iteration"]

    assert main(["run", "--resume", str(killed), "--iterations", "3", "--quiet"]) == 0
    straight = straight_and_extended[0]
    assert [_stable(r) for r in lines(metrics)] == [_stable(r) for r in lines(straight / "metrics.jsonl")]
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["iterations"] == 3 and [(e["from"], e["to"], e["after_iteration"]) for e in summary["extended"]] == [(2, 3, checkpointed)]
