"""Evaluation on the fleet names the adapter version it started with, even when the trainer
publishes a newer one while it runs, and its metrics say which version that was. The fleet is
one scripted vLLM-like server (`scripted_fleet.ScriptedFleetMember`) that takes adapters at
run time and says which model name served each request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_fleet import ScriptedFleetMember

from agents.engine import Adapter, SamplingParams
from agents.engines.fleet import FleetEngine
from agents.models import load_tokenizer
from agents.rollout import RolloutConfig, RolloutDriver
from agents.trajectory import Trajectory, TurnRecord
from envs import registry
from espl.run.evaluation import EVALUATED_ADAPTER, evaluate
from espl.run.on_policy import adapter_share

MODEL = "tiny-random"


class Published:
    """An adapter source whose every update is a new folder (what the fleet loads)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.version = 0

    def published_adapter(self) -> Adapter:
        self.version += 1
        folder = self.directory / f"v{self.version:06d}"
        folder.mkdir()
        return Adapter(path=str(folder), version=self.version)


@pytest.fixture()
def member() -> Iterator[ScriptedFleetMember]:
    server = ScriptedFleetMember(load_tokenizer(MODEL), base=MODEL)
    yield server
    server.stop()


def test_an_evaluation_keeps_its_version_when_a_newer_one_is_published_meanwhile(
    member: ScriptedFleetMember, tmp_path: Path
) -> None:
    fleet = FleetEngine(MODEL, base_urls=[member.url], run_name="run", keep_versions=2, backoff=0.01)
    source = Published(tmp_path)
    evaluated = fleet.adapter_from(source)  # type: ignore[arg-type]
    driver = RolloutDriver(fleet, lambda: registry.make("gsm8k", split="test"),
                           RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=24)))
    tasks = list(driver.envs(1)[0].tasks[:4])
    newer: list[Adapter] = []

    def publish_after_the_first_batch(finished: int) -> None:
        if finished == 2 and not newer:  # the trainer's next update lands mid-evaluation
            newer.append(fleet.adapter_from(source))  # type: ignore[arg-type]

    result = evaluate(driver, tasks, n_samples=2, adapter=evaluated, batch_size=2, seed=5,
                      progress=publish_after_the_first_batch)
    fleet.close()
    assert newer and newer[0].name == "run-v2" and fleet.sync.live is not None and fleet.sync.live[0] == "run-v2"
    served = [model for model, kind in member.completions_log if kind == "policy"]
    assert len(served) == 8 and set(served) == {"run-v1"}, "every request, after v2 too, names v1"
    assert result.metrics[EVALUATED_ADAPTER] == {"name": "run-v1", "version": 1, "sampled_share": 1.0}
    assert all(t.error is None for t in result.trajectories)


def test_the_share_says_when_turns_were_sampled_with_another_version() -> None:
    def sampled_with(*names: str | None) -> Trajectory:
        trajectory = Trajectory("env", "task")
        trajectory.turns = [TurnRecord(0, 1, 0, "stop", 0.0, adapter=name) for name in names]
        return trajectory

    evaluated = Adapter(name="run-v1", version=1)
    assert adapter_share([sampled_with("run-v1", "run-v2"), sampled_with("run-v1")], evaluated) == pytest.approx(2 / 3)
    assert adapter_share([sampled_with(None)], evaluated) is None, "an engine that does not say is not checked"


@pytest.mark.slow
def test_a_run_records_the_version_each_evaluation_used(tmp_path: Path) -> None:
    from espl.config import load_config
    from espl.run.run_dir import RunDir
    from espl.run.train import run_training

    config = load_config("smoke", ["method=rl", f'policy.model="{MODEL}"', 'env.name="gsm8k"'])
    run_training(config, RunDir(tmp_path / "run"))
    evals = [record["eval"] for record in RunDir(tmp_path / "run").read("metrics.jsonl")]
    assert [e[EVALUATED_ADAPTER]["version"] for e in evals] == [0, 1], "the start, then after the first step"
    assert {e[EVALUATED_ADAPTER]["name"] for e in evals} == {"policy"}
    assert all(e[EVALUATED_ADAPTER]["sampled_share"] is None for e in evals), "the hf engine does not say"
