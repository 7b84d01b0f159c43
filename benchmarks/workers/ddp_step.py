"""The trainer step both sides of the torchrun benchmark take, and what rank 1 runs.

SmolLM2-135M-Instruct in fp32 (`ESPL_BENCH_QUICK=1`: the tiny random model), LoRA rank 8 on
every projection, E-SPL's reinforce loss, 8 prompts of 96 tokens x 4 samples of 64 tokens
(random ids: the step's cost does not depend on their values), micro-batches of 4 so that
each of 2 ranks gets 4 of the 8. On 2 cores both sides use both: one process 2 threads, two
ranks 1 thread each (what `torchrun` sets). The sharded side (`rl.fsdp`) runs the same step
with the base's decoder layers split over the two ranks.
"""

from __future__ import annotations

import os
import random
import socket
from typing import Any

from benchmarks.workers.runtime import QUICK

MODEL = "tiny-random" if QUICK else "smollm2-135m"
PROMPTS, SAMPLES, PROMPT_TOKENS, NEW_TOKENS, MICRO_BATCH = 8, 4, 96, 64, 4


def batch() -> tuple[list[Any], list[tuple[str, str]]]:
    from agents.trajectory import Trajectory

    rng = random.Random(0)
    out, keys = [], []
    for p in range(PROMPTS):
        prompt = [rng.randrange(100, 20000) for _ in range(PROMPT_TOKENS)]
        for s in range(SAMPLES):
            t = Trajectory("synthetic", f"task{p}", "p0", s)
            t.append_prompt(list(prompt))
            sampled = [rng.randrange(100, 20000) for _ in range(NEW_TOKENS)]
            t.append_sampled(sampled, [-rng.random() for _ in sampled])
            t.reward = float(s % 2)
            out.append(t)
            keys.append(("p0", t.task_id))
    return out, keys


def trainer(distributed: Any = None, fsdp: bool = False) -> Any:
    from agents import models
    from espl.rl.settings import LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    config = TrainerConfig(loss="reinforce", micro_batch_size=MICRO_BATCH, lora=LoraSettings(rank=8, alpha=16),
                           fsdp=fsdp)
    return LoRATrainer(models.load_model(MODEL), config, distributed=distributed)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join(rank: int, port: int) -> Any:
    """This process as `rank` of 2 on 127.0.0.1, with one torch thread."""
    import torch

    from espl.rl.distributed import DistributedContext

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    return DistributedContext.from_environment()


def follower(port: int, fsdp: bool = False) -> None:
    """Rank 1: build the trainer with rank 0, then step on each batch it broadcasts until None."""
    ranks = join(1, port)
    model_trainer = trainer(ranks, fsdp)
    while (received := ranks.broadcast()) is not None:
        model_trainer.step(*received)
    ranks.close()
