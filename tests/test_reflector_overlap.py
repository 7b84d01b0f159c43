"""Evolution beside the trainer step: where the reflector is remote (the fleet the policy samples
on, asked with the adapter off), an iteration's reflection runs while the trainer steps, and a
fixed-seed run records exactly what the sequential run records (timings aside). The fleet is
one scripted vLLM-like server (`scripted_fleet.ScriptedFleetMember`); the trainer is real
(the tiny random model, real peft)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_fleet import ScriptedFleetMember

from agents.models import load_tokenizer
from espl.config import load_config
from espl.evolution.evolver import Evolver
from espl.run import builder
from espl.run.plan import plan_run
from espl.run.run_dir import RunDir
from espl.run.train import run_training

MODEL = "tiny-random"
VOLATILE = {"timings", "wall_s", "eval_s", "update_s", "created_at"}
RUN_NAME = re.compile(r"(overlap|sequential)-[0-9a-f]{6}-v")  # `<run dir>-<random tag>-v<k>`
"""A fleet names each run's adapter versions under a random run name; runs compare without it."""


@pytest.fixture(scope="module")
def member() -> Iterator[ScriptedFleetMember]:
    server = ScriptedFleetMember(load_tokenizer(MODEL), base=MODEL)
    yield server
    server.stop()


def fleet_config(url: str, *extra: str) -> Any:
    sets = ["method=espl", f'policy.model="{MODEL}"', 'env.name="gsm8k"', 'policy.engine="fleet"',
            f'policy.base_urls=["{url}"]', "iterations=2", "evolution.reflector.max_tokens=128", *extra]
    return load_config("smoke", sets)


def stable(value: Any) -> Any:
    """A record without wall-clock figures, with adapter names stripped of the run's random name."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str):
        return RUN_NAME.sub("v", value)
    return value


def records(run_dir: Path, name: str) -> list[Any]:
    return [stable(json.loads(line)) for line in (run_dir / name).read_text().splitlines()]


def test_overlap_applies_where_the_reflector_shares_nothing_that_computes() -> None:
    from agents.engines.fleet import FleetEngine
    from agents.engines.hf import HFEngine

    url = "http://127.0.0.1:9"  # never asked: building an engine sends nothing
    plan = plan_run(fleet_config(url))
    fleet = FleetEngine(MODEL, base_urls=[url])
    hf = HFEngine(MODEL)
    assert plan.reflector is None, "the reflector is the policy's engine"
    assert builder.reflector_overlaps_update(plan, fleet, fleet), "the shared fleet: remote, adapter off"
    assert not builder.reflector_overlaps_update(plan, hf, hf), "the shared hf engine samples from the trained model"
    separate = plan_run(fleet_config(url, 'evolution.reflector.engine="openai"', f'evolution.reflector.base_urls=["{url}"]'))
    assert separate.reflector is not None and builder.reflector_overlaps_update(separate, fleet, hf)
    fleet.close()


@pytest.mark.slow
def test_a_run_with_evolution_beside_the_step_records_what_the_sequential_run_does(
    member: ScriptedFleetMember, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_main_thread: list[bool] = []
    evolve = Evolver.evolve

    def watched(self: Evolver, *args: Any, **kwargs: Any) -> Any:
        on_main_thread.append(threading.current_thread() is threading.main_thread())
        return evolve(self, *args, **kwargs)

    monkeypatch.setattr(Evolver, "evolve", watched)
    config = fleet_config(member.url)
    run_training(config, RunDir(tmp_path / "overlap"))
    assert on_main_thread == [False, False], "each iteration's evolution ran beside the trainer step"
    on_main_thread.clear()
    monkeypatch.setattr(builder, "reflector_overlaps_update", lambda *args: False)
    run_training(config, RunDir(tmp_path / "sequential"))
    assert on_main_thread == [True, True]

    for name in ("metrics.jsonl", "prompts.jsonl", "rollouts.jsonl"):
        assert records(tmp_path / "overlap", name) == records(tmp_path / "sequential", name), name
    metrics = records(tmp_path / "overlap", "metrics.jsonl")
    assert all(not m["train"].get("skipped") for m in metrics[1:]), "the trainer stepped in both iterations"
    assert any(m["evolution"].get("mutation", {}).get("child") for m in metrics[1:]), "the reflector made a child"
    assert metrics[-1]["budget"]["reflector_calls"] > 0
    pinned = [m["eval"]["evaluated_adapter"] for m in metrics]
    assert [p["version"] for p in pinned] == [0, 1, 2] and {p["sampled_share"] for p in pinned} == {1.0}
    assert {kind for _, kind in member.completions_log} == {"policy", "reflector"}
