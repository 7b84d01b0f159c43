"""The trainer on two gloo ranks takes the single-process step: every loss, every aggregation, resume.

Two processes are spawned on 127.0.0.1 (`tests/ddp_ranks.py`); rank 0 broadcasts the batch,
each rank runs its share of the micro-batches, and the LoRA weights after the step are
compared with those of one process stepping on the whole batch (float32, tiny model). The
same holds with the base model sharded over the ranks by FSDP (`rl.fsdp`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch.multiprocessing as mp

import ddp_ranks
from espl.rl.distributed import DistributedContext, share

TOLERANCE = 1e-6
"""max |LoRA(2 ranks) - LoRA(1 process)| after a step; the summed gradients differ only in the
order of their terms (measured: at most 7.5e-9 for a step that moves the weights by 4e-5)."""


def _spawn(tmp_path: Path, cases: list[tuple[str, str, str]], *, resume: bool = False, fsdp: bool = False) -> dict:
    out = tmp_path / "report.json"
    mp.spawn(ddp_ranks.run_rank, args=(2, ddp_ranks.free_port(), str(out), cases, resume, fsdp), nprocs=2)
    return json.loads(out.read_text())


def _check_cases(report: dict, cases: list[tuple[str, str, str]]) -> None:
    assert report["ranks_identical"], "the ranks hold different LoRA weights after a step"
    assert sorted(report["cases"]) == sorted("/".join(case) for case in cases)
    for name, case in report["cases"].items():
        assert case["moved"] > 10 * TOLERANCE, f"{name}: the step did not move the weights"
        assert case["max_lora_difference"] <= TOLERANCE, name
        assert case["loss"][0] == pytest.approx(case["loss"][1], rel=1e-5, abs=1e-9), name
        assert case["grad_norm"][0] == pytest.approx(case["grad_norm"][1], rel=1e-5), name


@pytest.mark.slow
def test_two_gloo_ranks_take_the_single_process_step(tmp_path: Path) -> None:
    cases = [("grpo", "seq_mean_token_mean", "mini_batches_recomputed")]  # 4 optimizer steps, shared recompute
    _check_cases(_spawn(tmp_path, cases), cases)


@pytest.mark.slow
def test_a_sharded_base_on_two_gloo_ranks_takes_the_single_process_step(tmp_path: Path) -> None:
    """FSDP: shared recompute and mini-batches, the EMA anchor's forward, the K3 reference's (adapter off)."""
    cases = [("grpo", "seq_mean_token_mean", "mini_batches_recomputed"), ("ema_pg", "token_mean", "one_step"),
             ("grpo+k3", "token_sum", "one_step")]
    report = _spawn(tmp_path, cases, fsdp=True)
    _check_cases(report, cases)
    held = report["bytes"]  # every decoder layer is sharded: the ranks hold them once between them
    assert held["sharded_all_ranks"] >= held["decoder_layers"] > 0
    assert held["rank"]["sharded"] <= 0.51 * held["sharded_all_ranks"]


@pytest.mark.extended  # 25 cases each; `make test` steps one on two ranks above
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_every_loss_and_aggregation_on_two_ranks(tmp_path: Path, fsdp: bool) -> None:
    cases = [(loss, aggregation, "one_step") for loss in ddp_ranks.LOSSES for aggregation in ddp_ranks.AGGREGATIONS]
    cases += [(loss, "token_mean", "mini_batches_recomputed") for loss in ddp_ranks.LOSSES]
    _check_cases(_spawn(tmp_path, cases, fsdp=fsdp), cases)


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_resume_on_two_ranks_reproduces_the_next_step(tmp_path: Path, fsdp: bool) -> None:
    resume = _spawn(tmp_path, [], resume=True, fsdp=fsdp)["resume"]
    assert resume["step"] == [2, 2]
    assert resume["max_lora_difference"] <= TOLERANCE
    assert resume["loss"][0] == pytest.approx(resume["loss"][1], rel=1e-6, abs=1e-12)
    # what rank 0 wrote after the first step holds the whole adapter of one process's step
    assert resume["checkpoint_difference"] <= TOLERANCE
    assert resume["published_difference"] <= TOLERANCE


def test_micro_batches_are_shared_by_tokens_and_each_runs_once() -> None:
    costs = [40, 10, 10, 30, 20, 20, 5]
    shares = [share(costs, 3, rank) for rank in range(3)]
    assert sorted(i for mine in shares for i in mine) == list(range(len(costs)))
    loads = [sum(costs[i] for i in mine) for mine in shares]
    assert max(loads) - min(loads) <= max(costs) // 2
    assert shares == [share(costs, 3, rank) for rank in range(3)]  # the same answer every time
    assert share([7], 2, 1) == [] and share([7], 2, 0) == [0]  # a rank may have nothing to run


def test_a_process_started_alone_is_rank_0_of_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    alone = DistributedContext.from_environment()
    assert (alone.rank, alone.world_size, alone.is_main, alone.enabled) == (0, 1, True, False)
    assert alone.broadcast({"a": 1}) == {"a": 1} and alone.gather(3) == [3]
    assert alone.local_device("cuda") == "cuda"
