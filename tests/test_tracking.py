"""Experiment tracking's contract without a model: names checked before a run starts, the records
turned into scalars, tables and texts, the feed, the registry, and no cost when it is off."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from espl.config import ConfigError, load_config
from espl.evolution.population import Population
from espl.run.plan import plan_run
from espl.tracking import (
    TrackerContext, TrackerFeed, TrackingError, check_report_to, open_trackers, register_tracker, tracker_names,
)
from espl.tracking.records import PROMPT_COLUMNS, evaluated_prompt, prompt_rows, scalar_metrics

GOLDEN = Path(__file__).resolve().parent / "data" / "golden" / "coin--espl.json.gz"


class RecordingTracker:
    """A test backend that keeps every call (registered like a plugin's backend would be)."""

    built: list[RecordingTracker] = []

    def __init__(self, context: TrackerContext) -> None:
        self.context = context
        self.calls: list[tuple[str, int, Any]] = []
        self.finished = False
        RecordingTracker.built.append(self)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.calls.append(("metrics", step, dict(metrics)))

    def log_prompts(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.calls.append(("prompts", step, (tuple(columns), [list(r) for r in rows])))

    def log_text(self, step: int, name: str, text: str) -> None:
        self.calls.append(("text", step, (name, text)))

    def finish(self) -> None:
        self.finished = True


register_tracker("recording", RecordingTracker, replace=True)


def _golden_metrics() -> list[dict[str, Any]]:
    return json.loads(gzip.open(GOLDEN).read())["metrics"]


# -- names -----------------------------------------------------------------------------------------


def test_the_built_in_backends_are_registered() -> None:
    assert {"tensorboard", "wandb", "mlflow"} <= set(tracker_names())


def test_an_unknown_name_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(TrackingError, match="unknown tracker.*tensorbord.*known: .*mlflow.*tensorboard.*wandb.*none"):
        check_report_to(["tensorbord"])
    with pytest.raises(ConfigError, match=r"^report_to: unknown tracker"):
        plan_run(load_config("smoke", ['report_to=["tensorbord"]']))


def test_none_or_nothing_turns_tracking_off_and_none_cannot_be_combined() -> None:
    assert check_report_to([]) == check_report_to(["none"]) == check_report_to([" "]) == ()
    assert plan_run(load_config("smoke")).trackers == ()
    with pytest.raises(TrackingError, match="'none' turns tracking off"):
        check_report_to(["none", "recording"])
    assert check_report_to(["recording", "recording"]) == ("recording",)


@pytest.mark.parametrize(("backend", "module"), [("tensorboard", "tensorboard"), ("wandb", "wandb"), ("mlflow", "sqlalchemy")])
def test_a_backend_whose_package_is_missing_names_the_extra(backend: str, module: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what find_spec reports for a module that is not installed
    with pytest.raises(TrackingError, match=rf"{backend} needs the package\(s\) {module}.*espl-bench\[tracking\]"):
        check_report_to([backend])


def test_the_cli_refuses_a_missing_package_before_the_run_directory_exists(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from espl.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    out = tmp_path / "run"
    code = main(["run", "--env", "gsm8k", "--preset", "smoke", "--model", "tiny-random", "--report-to", "tensorboard,wandb",
                 "--out", str(out), "--quiet"])
    printed = capsys.readouterr()
    assert code == 2 and "report_to: wandb needs the package(s) wandb" in printed.out + printed.err
    assert not out.exists()


def test_report_to_is_a_comma_list_and_may_change_on_resume(tmp_path: Path) -> None:
    import argparse

    from espl.commands.run import add_arguments, resolve_config

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    fresh = resolve_config(parser.parse_args(["--preset", "smoke", "--report-to", "tensorboard, recording"]))
    assert fresh.report_to == ["tensorboard", "recording"]
    (tmp_path / "config.json").write_text(json.dumps(fresh.to_dict()))
    resumed = resolve_config(parser.parse_args(["--resume", str(tmp_path), "--report-to", "none"]))
    assert resumed.report_to == ["none"] and resumed.iterations == fresh.iterations
    assert resolve_config(parser.parse_args(["--resume", str(tmp_path)])).report_to == ["tensorboard", "recording"]


def test_compare_passes_report_to_to_each_run() -> None:
    from types import SimpleNamespace

    from espl.commands.compare import command_for

    spec = SimpleNamespace(run_dir=Path("runs/x"))
    assert "--report-to" not in command_for(spec)
    assert command_for(spec, "tensorboard,wandb")[-2:] == ["--report-to", "tensorboard,wandb"]


# -- records ---------------------------------------------------------------------------------------


def test_a_metrics_line_becomes_every_number_under_slash_joined_names() -> None:
    record = next(r for r in _golden_metrics() if "train" in r and "eval" in r)
    scalars = scalar_metrics(record)
    assert scalars["train_reward"] == record["train_reward"]
    assert scalars["eval/pass@1"] == record["eval"]["pass@1"]
    assert scalars["budget/train_rollouts"] == record["budget"]["train_rollouts"]
    assert scalars["train/loss"] == record["train"]["loss"]
    assert scalars["evolution/match/played"] == 1.0  # a boolean as 0/1
    assert "iteration" not in scalars and "eval/iteration" not in scalars  # the step, not a scalar
    assert not any(key.startswith(("prompts", "eval/prompt_id")) for key in scalars)  # text and lists stay out
    assert all(isinstance(value, float) for value in scalars.values())


def _population() -> Population:
    population = Population(capacity=2, window_size=2)
    seed = population.create(["Read carefully.", "Answer briefly."], step=0)
    child = population.create(["Read carefully."], step=1, parents=(seed.id,), operator="mutation")
    population.create(["Answer | briefly."], step=2, parents=(seed.id, child.id), operator="crossover")
    return population


def test_the_prompt_table_has_every_prompt_with_lineage_and_membership() -> None:
    population = _population()
    rows = [dict(zip(PROMPT_COLUMNS, row)) for row in prompt_rows(population)]
    assert [r["id"] for r in rows] == [p.id for p in population.archive()]
    assert [r["member"] for r in rows] == [False, True, True]  # capacity 2: the seed was evicted
    assert rows[2]["parents"] == f"{rows[0]['id']} {rows[1]['id']}" and rows[2]["operator"] == "crossover"
    assert rows[0]["principles"] == population.archive()[0].text


def test_the_feed_sends_each_record_to_every_tracker_and_closes_them(tmp_path: Path) -> None:
    RecordingTracker.built.clear()
    feed = open_trackers(["recording"], TrackerContext(tmp_path, "run"))
    assert isinstance(feed, TrackerFeed) and len(RecordingTracker.built) == 1
    population = _population()
    evaluated = population.archive()[1]
    feed.record({"iteration": 0, "eval": {"accuracy": 0.5, "prompt_id": evaluated.id}}, population)
    feed.record({"iteration": 1, "train_reward": 0.25})  # a record without a population: scalars only
    feed.finish()
    tracker = RecordingTracker.built[0]
    assert [(kind, step) for kind, step, _ in tracker.calls] == [("metrics", 0), ("prompts", 0), ("text", 0), ("metrics", 1)]
    assert tracker.calls[0][2] == {"eval/accuracy": 0.5} and tracker.calls[3][2] == {"train_reward": 0.25}
    assert tracker.calls[2][2] == ("eval_prompt", evaluated.text)
    assert tracker.finished


class FailingTracker(RecordingTracker):
    """A backend whose store breaks at its second record (a full disk, a server gone)."""

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        if step >= 2:
            raise OSError("No space left on device")
        super().log_metrics(step, metrics)


register_tracker("failing", FailingTracker, replace=True)


def test_a_tracker_that_fails_is_reported_and_dropped_and_the_others_go_on(tmp_path: Path, caplog) -> None:
    RecordingTracker.built.clear()
    feed = open_trackers(["failing", "recording"], TrackerContext(tmp_path, "run"))
    assert feed is not None
    for step in (1, 2, 3):
        feed.record({"iteration": step, "train_reward": 0.5})
    feed.finish()
    failing, recording = RecordingTracker.built
    assert [step for _, step, _ in failing.calls] == [1] and not failing.finished
    assert [step for _, step, _ in recording.calls] == [1, 2, 3] and recording.finished
    assert feed.dropped == {"failing": "OSError: No space left on device"}
    assert "tracker failing failed at iteration 2 and is dropped" in caplog.text


def test_the_evaluated_prompt_is_none_without_an_evaluation() -> None:
    assert evaluated_prompt({"iteration": 3, "train_reward": 0.5}, _population()) is None


def test_registration_rules() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_tracker("wandb", RecordingTracker)
    with pytest.raises(ValueError, match="means no tracking"):
        register_tracker("none", RecordingTracker)
    with pytest.raises(ValueError, match="package.module:Class"):
        register_tracker("bad", "no_colon_here")


@pytest.mark.slow
def test_tracking_off_imports_no_tracker_package() -> None:
    """A run without report_to builds its parts without any tracking backend's package."""
    code = (
        "import sys; import espl.run.train, espl.run.builder, espl.tracking; "
        "from espl.config import load_config; from espl.run.plan import plan_run; plan_run(load_config('smoke')); "
        "print([m for m in ('wandb', 'mlflow', 'tensorboard', 'torch.utils.tensorboard') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
