"""Experiment tracking end to end: one real run feeds TensorBoard, W&B (offline) and MLflow (local
store), and each backend's own files, read back with its own reader, hold what metrics.jsonl holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from espl.config import load_config
from espl.run.run_dir import RunDir
from espl.run.train import run_training
from espl.tracking import TrackerContext
from espl.tracking.tensorboard_tracker import TensorBoardTracker

import golden_runs
import wandb_log

pytest.importorskip("tensorboard", reason="the tracking extra is installed by `make`")
pytest.importorskip("wandb", reason="the tracking extra is installed by `make`")
pytest.importorskip("mlflow", reason="the tracking extra is installed by `make`")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory, monkeypatch_module) -> RunDir:
    """The golden coin scenario (rewards, RL steps, mutation and crossover children, matches)
    for three iterations, evaluated every other one, reported to every built-in backend."""
    golden_runs.install()
    settings = {"method": "espl", "policy.model": "tiny-random", "env.name": "coin", "seed": 0,
                **golden_runs.COIN_SETTINGS, "iterations": 3, "report_to": ["tensorboard", "wandb", "mlflow"]}
    config = load_config("smoke", [f"{key}={json.dumps(value)}" for key, value in settings.items()])
    run_dir = RunDir(tmp_path_factory.mktemp("tracked") / "run")
    run_training(config, run_dir)
    return run_dir


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_MODE", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
            patch.delenv(name, raising=False)
        yield patch


def _series(run_dir: RunDir, *path: str) -> dict[int, float]:
    """Step -> value of one (nested) key of metrics.jsonl, where the line has it."""
    out = {}
    for record in run_dir.read("metrics.jsonl"):
        node = record
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, (int, float)):
            out[int(record["iteration"])] = float(node)
    return out


@pytest.mark.slow
def test_tensorboard_events_hold_the_rewards_of_metrics_jsonl(tracked_run: RunDir) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train = _series(tracked_run, "train_reward")
    assert sorted(train) == [1, 2, 3] and any(value > 0 for value in train.values())
    events = EventAccumulator(str(tracked_run.file("tensorboard")), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    for tag, path in (("train_reward", ("train_reward",)), ("eval/accuracy", ("eval", "accuracy")),
                      ("eval/pass@1", ("eval", "pass@1")), ("train/loss", ("train", "loss")),
                      ("budget/train_rollouts", ("budget", "train_rollouts"))):
        expected = _series(tracked_run, *path)
        assert expected, path
        logged = {event.step: event.value for event in events.Scalars(tag)}
        assert logged == pytest.approx(expected, rel=1e-6), tag  # TensorBoard keeps float32
    texts = events.Tags()["tensors"]
    assert {"prompts/population/text_summary", "prompts/eval_prompt/text_summary"} <= set(texts)
    table = events.Tensors("prompts/population/text_summary")[-1]
    last_table = table.tensor_proto.string_val[0].decode()
    from espl.evolution.prompt_log import load_prompt_log

    population = load_prompt_log(tracked_run.file("prompts.jsonl"))
    assert len(population.archive()) > 1, "the scenario made children"
    for prompt in population.archive():
        assert f"| {prompt.id} |" in last_table and prompt.operator in last_table


@pytest.mark.slow
def test_wandb_offline_run_lives_in_the_run_directory_and_its_history_holds_the_rewards(tracked_run: RunDir) -> None:
    runs = list(tracked_run.file("wandb").glob("offline-run-*"))
    assert len(runs) == 1
    history = wandb_log.history(wandb_log.wait_closed(next(runs[0].glob("run-*.wandb"))))
    train = _series(tracked_run, "train_reward")
    assert {step: row["train_reward"] for step, row in history.items() if "train_reward" in row} == pytest.approx(train)
    accuracy = _series(tracked_run, "eval", "accuracy")
    assert {step: row["eval/accuracy"] for step, row in history.items() if "eval/accuracy" in row} == pytest.approx(accuracy)
    assert all(row.get("prompts/population/_type") == "table-file" for row in history.values())
    tables = list((runs[0] / "files" / "media" / "table" / "prompts").glob("population_*.table.json"))
    assert len(tables) == len(history)
    last = max(tables, key=lambda path: int(path.name.split("_")[1]))
    data = json.loads(last.read_text())
    assert data["columns"][:3] == ["id", "parents", "operator"] and len(data["data"]) > 1


@pytest.mark.slow
def test_mlflow_local_store_holds_the_metric_histories_and_the_prompts(tracked_run: RunDir) -> None:
    from mlflow.tracking import MlflowClient

    folder = tracked_run.file("mlflow")
    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    run_id = (folder / "espl-run-id").read_text().strip()
    for key, path in (("train_reward", ("train_reward",)), ("eval/pass_1", ("eval", "pass@1")),
                      ("train/loss", ("train", "loss"))):
        logged = {m.step: m.value for m in client.get_metric_history(run_id, key)}
        assert logged == pytest.approx(_series(tracked_run, *path)), key
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["method"] == "espl"
    population = [a.path for a in client.list_artifacts(run_id, "prompts/population")]
    assert population == [f"prompts/population/step-{step:05d}.json" for step in range(4)]
    evaluated = [a.path for a in client.list_artifacts(run_id, "prompts/eval_prompt")]
    assert evaluated == [f"prompts/eval_prompt/step-{step:05d}.txt" for step in sorted(_series(tracked_run, "eval", "accuracy"))]


def test_tensorboard_drops_the_iterations_a_resumed_run_redoes(tmp_path: Path) -> None:
    """A run killed in iteration 3 resumes after its checkpoint of iteration 1: the events of
    iterations 2 and 3 written before the kill are purged, so each step shows one value."""
    first = TensorBoardTracker(TrackerContext(tmp_path, "run"))
    for step in (1, 2, 3):
        first.log_metrics(step, {"train_reward": float(step)})
    first.finish()
    resumed = TensorBoardTracker(TrackerContext(tmp_path, "run", resumed_after=1))
    for step in (2, 3):
        resumed.log_metrics(step, {"train_reward": 10.0 * step})
    resumed.finish()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train_reward")] == [(1, 1.0), (2, 20.0), (3, 30.0)]
