"""A fleet run resumed on servers started again elsewhere (what `espl-bench launch -- --resume DIR`
does): `run --resume DIR --set policy.base_urls=[...]` loads the checkpoint's adapter on the
new servers before any request, samples there, and records where it now runs. The servers are
scripted vLLM-like members (`scripted_fleet.ScriptedFleetMember`); the trainer is real (the tiny
random model, real peft)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripted_fleet import ScriptedFleetMember

from agents.models import load_tokenizer
from espl.cli import main

MODEL = "tiny-random"
WEIGHTS = "adapter_model.safetensors"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_load(member: ScriptedFleetMember) -> tuple[str, str]:
    name = [name for kind, name in member.requests if kind == "load"][-1]
    return name, member.loaded_from[name]


@pytest.mark.slow
def test_a_fleet_run_resumed_on_new_servers_loads_its_checkpoint_adapter_there_first(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    tokenizer = load_tokenizer(MODEL)
    run_dir = tmp_path / "run"
    old = ScriptedFleetMember(tokenizer, base=MODEL)
    try:
        assert main(["run", "--env", "gsm8k", "--method", "rl", "--preset", "smoke", "--model", MODEL, "--quiet",
                     "--set", "policy.engine=fleet", "--set", f'policy.base_urls=["{old.url}"]', "--iterations", "1",
                     "--out", str(run_dir)]) == 0
    finally:
        old.stop()  # that fleet is gone: its address answers no more
    _, trained_folder = last_load(old)  # the adapter after iteration 1's step, which the checkpoint holds
    trained = load_file(str(Path(trained_folder) / WEIGHTS))

    new = ScriptedFleetMember(tokenizer, base=MODEL)
    try:
        assert main(["run", "--resume", str(run_dir), "--iterations", "2", "--quiet",
                     "--set", f'policy.base_urls=["{new.url}"]']) == 0
    finally:
        new.stop()

    kind, first = new.requests[0]
    assert kind == "load", new.requests[:3]
    assert new.loaded_from[first] == trained_folder, "the first version the new server gets is the checkpoint's"
    restored = load_file(str(Path(trained_folder) / WEIGHTS))
    assert trained.keys() == restored.keys() and all(torch.equal(trained[k], restored[k]) for k in trained)
    asked = [name for kind, name in new.requests if kind == "complete"]
    assert asked and set(asked) <= set(new.loaded_from), "every request names a version loaded there"
    resumed_turns = {turn["adapter"] for record in lines(run_dir / "rollouts.jsonl") if record["iteration"] == 2
                     and record["phase"] == "train" for turn in record["turns"]}
    assert resumed_turns == {first}, "iteration 2 sampled with the checkpoint's adapter, on the new server"

    assert json.loads((run_dir / "config.json").read_text())["policy"]["base_urls"] == [new.url]
    assert [record["iteration"] for record in lines(run_dir / "metrics.jsonl")] == [0, 1, 2]
    assert json.loads((run_dir / "summary.json").read_text())["iterations"] == 2
