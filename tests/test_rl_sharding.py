"""`rl.fsdp`: what is refused before anything loads, and how the sharded passes are kept in step.

The sharded step itself, on two gloo ranks against one process, is in
`tests/test_rl_distributed.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from espl.config import ConfigError, load_config
from espl.rl.batching import MicroBatchPlan
from espl.rl.sharding import lockstep_share
from espl.run.plan import plan_run

TRAINS_ON_VLLM = {"method": "espl", "env": {"name": "gsm8k"}, "policy": {"engine": "vllm"}, "rl": {"fsdp": True}}


def test_a_sharded_base_plans_with_an_engine_that_holds_its_own_weights() -> None:
    assert plan_run(load_config(None, base=TRAINS_ON_VLLM)).trainer.fsdp


@pytest.mark.parametrize(
    "change",
    [{"policy": {"engine": "hf"}}, {"evolution": {"reflector": {"engine": "hf"}}}],
    ids=["hf-policy", "hf-reflector"],
)
def test_generating_with_the_whole_model_in_process_is_refused(change: dict) -> None:
    config = {**TRAINS_ON_VLLM, **change}
    with pytest.raises(ConfigError, match=r"^rl\.fsdp: .*hf") as refused:
        plan_run(load_config(None, base=config))
    assert "\n" not in str(refused.value)


def test_a_sharded_base_in_one_process_is_refused_by_the_trainer(monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import models
    from espl.rl.settings import TrainerConfig
    from espl.rl.trainer import LoRATrainer

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match=r"rl\.fsdp shards the base model over torchrun's ranks"):
        LoRATrainer(models.load_model("tiny-random"), TrainerConfig(fsdp=True))


def test_a_sharded_run_started_alone_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from espl.cli import main

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "run"
    code = main(["run", "--env", "gsm8k", "--set", 'policy.engine="vllm"', "--set", "rl.fsdp=true", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 2
    assert "rl.fsdp shards the base model over torchrun's ranks" in printed
    assert not out.exists()  # refused before a directory or a model exists


def _plan(cost: int, prefixed: bool) -> MicroBatchPlan:
    """A plan whose `cost` is its one row's length (the lockstep share reads costs and kinds only)."""
    return MicroBatchPlan(rows=[cost], cuts=[0], prefixes=[(1,)] * 2 if prefixed else None)


def test_every_rank_runs_as_many_passes_of_each_kind_and_each_micro_batch_counts_once() -> None:
    kinds = [False, True, False, False, True, False, False]
    costs = [40, 10, 10, 30, 20, 20, 5]
    plans = [_plan(cost, prefixed) for cost, prefixed in zip(costs, kinds)]
    for world in (2, 3, 8):
        shares = [lockstep_share(plans, costs, world, rank) for rank in range(world)]
        for rank_share in shares:  # position by position, every rank runs the same kind of pass
            assert [plan.prefixes is not None for plan, _ in rank_share] == \
                [plan.prefixes is not None for plan, _ in shares[0]]
        counted = sorted(plans.index(plan) for rank_share in shares for plan, counts in rank_share if counts)
        assert counted == list(range(len(plans)))
        fillers = [plan for rank_share in shares for plan, counts in rank_share if not counts]
        assert all(plan.rows[0] in (5, 10) for plan in fillers)  # the cheapest of its kind
    assert len(shares[0]) == 2 and sum(not counts for rank_share in shares for _, counts in rank_share) == 16 - 7
