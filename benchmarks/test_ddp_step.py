"""A trainer step in one process against the same step on two gloo ranks (`torchrun`'s split).

The two-rank side is this process as rank 0 and a spawned rank 1: each round broadcasts the
batch (as a run's rank 0 does) and both ranks step, each on its token-balanced half of the
micro-batches, then sum the LoRA gradients; with `rl.fsdp` the base's decoder layers are also
sharded over the two (each rank's parameter bytes are recorded). The workload is in
`benchmarks/workers/ddp_step.py`.
"""

from __future__ import annotations

import multiprocessing

import pytest
import torch

from benchmarks.workers import ddp_step

ROUNDS = 3


def test_trainer_step_one_process(benchmark, machine_load) -> None:
    trainer, batch = ddp_step.trainer(), ddp_step.batch()
    benchmark.pedantic(lambda: trainer.step(*batch), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(model=ddp_step.MODEL, sequences=len(batch[0]), ranks=1)


@pytest.mark.parametrize("fsdp", [False, True], ids=["replicated", "fsdp"])
def test_trainer_step_two_gloo_ranks(benchmark, machine_load, fsdp: bool) -> None:
    from espl.rl.sharding import sharded_bytes

    threads = torch.get_num_threads()
    port = ddp_step.free_port()
    rank1 = multiprocessing.get_context("spawn").Process(target=ddp_step.follower, args=(port, fsdp))
    rank1.start()
    ranks = ddp_step.join(0, port)
    try:
        trainer, batch = ddp_step.trainer(ranks, fsdp), ddp_step.batch()
        benchmark.extra_info.update({f"rank0_{kind}_parameter_bytes": size
                                     for kind, size in sharded_bytes(trainer.model).items()})

        def step() -> None:
            trainer.step(*ranks.broadcast(batch))

        benchmark.pedantic(step, rounds=ROUNDS, iterations=1, warmup_rounds=1)
        ranks.broadcast(None)
        rank1.join(timeout=600)
        assert rank1.exitcode == 0
    finally:
        if rank1.is_alive():
            rank1.kill()
        ranks.close()
        torch.set_num_threads(threads)
    benchmark.extra_info.update(model=ddp_step.MODEL, sequences=len(batch[0]), ranks=2)


