"""What each rank runs in the distributed trainer tests (spawned processes, gloo on 127.0.0.1).

Rank 0 draws the batches and broadcasts them, as a run's rank 0 does; every rank steps a
trainer on them, and rank 0 also steps a single-process trainer on the same batch as the
reference. Rank 0 writes what it measured as JSON to `out`; the test asserts on it. With
`fsdp` the ranks' trainers shard the base model (`rl.fsdp`); the reference never does.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import socket
from pathlib import Path

import torch

from agents.trajectory import Trajectory

LOSSES = ("reinforce", "grpo", "dr_grpo", "cispo", "ema_pg")
AGGREGATIONS = ("token_sum", "seq_mean_token_sum", "token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
SCHEDULES = {
    "one_step": {},
    "mini_batches_recomputed": {"mini_batches": 2, "epochs": 2, "old_logprobs": "recompute"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trajectories(n: int, seed: int) -> tuple[list[Trajectory], list[tuple[str, str]]]:
    """Groups of 4 samples that share a prompt: sampled tokens, an env reply, more sampled tokens."""
    rng = random.Random(seed)
    out, keys = [], []
    prompt: list[int] = []
    for i in range(n):
        if i % 4 == 0:
            prompt = [rng.randrange(100, 5000) for _ in range(rng.randrange(5, 12))]
        t = Trajectory("synthetic", f"task{i // 4}", "p0", i % 4)
        t.append_prompt(list(prompt))
        first = [rng.randrange(100, 5000) for _ in range(rng.randrange(2, 9))]
        t.append_sampled(first, [-rng.random() * 3 for _ in first])
        t.append_env([rng.randrange(100, 5000) for _ in range(3)])
        second = [rng.randrange(100, 5000) for _ in range(rng.randrange(1, 6))]
        t.append_sampled(second, [-rng.random() * 3 for _ in second])
        t.reward = float(rng.random() < 0.5)
        out.append(t)
        keys.append(("p0", t.task_id))
    return out, keys


def trainer_config(loss: str, aggregation: str, schedule: str):
    """`loss` may name a KL after a `+` (`grpo+k3`: GRPO with the K3 term to the base, adapter off)."""
    from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig

    loss, _, kind = loss.partition("+")
    kl = KLSettings(kind="topk", topk=8) if loss == "ema_pg" else KLSettings(kind=kind or "none")
    return TrainerConfig(loss=loss, loss_options={"aggregation": aggregation}, micro_batch_size=2,
                         lora=LoraSettings(rank=4, alpha=8), kl=kl, **SCHEDULES[schedule])


def lora(trainer) -> dict[str, torch.Tensor]:
    from espl.rl.lora import POLICY, adapter_tensors

    return {k: v.detach().clone() for k, v in adapter_tensors(trainer.model, POLICY).items()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _start_b(trainer) -> None:
    """Non-zero B factors (the same on every rank), so that the A factors get gradients too."""
    from espl.rl.lora import POLICY, adapter_tensors

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in adapter_tensors(trainer.model, POLICY).items():
            if "lora_B" in name:
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)


def run_rank(rank: int, world: int, port: int, out: str, cases: list[tuple[str, str, str]], resume: bool,
             fsdp: bool = False) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from agents import models
    from espl.rl.distributed import DistributedContext
    from espl.rl.trainer import LoRATrainer

    ranks = DistributedContext.from_environment()
    base = models.load_model("tiny-random")
    batch, keys = ranks.broadcast(trajectories(12, seed=0) if ranks.is_main else None)
    report: dict = {"cases": {}, "ranks_identical": True}
    for loss, aggregation, schedule in cases:
        config = trainer_config(loss, aggregation, schedule)
        trainer = LoRATrainer(copy.deepcopy(base), dataclasses.replace(config, fsdp=fsdp), distributed=ranks)
        if fsdp:
            report["bytes"] = _parameter_bytes(trainer, base, ranks)
        _start_b(trainer)
        stats = trainer.step(batch, keys)
        after = lora(trainer)
        everyone = ranks.gather(after)
        report["ranks_identical"] &= all(max_difference(after, other) == 0.0 for other in everyone)
        if ranks.is_main:
            reference = LoRATrainer(copy.deepcopy(base), config)
            _start_b(reference)
            expected = reference.step(batch, keys)
            report["cases"][f"{loss}/{aggregation}/{schedule}"] = {
                "max_lora_difference": max_difference(after, lora(reference)),
                "moved": max_difference(after, lora(_fresh(base, config))),
                "loss": [stats["loss"], expected["loss"]],
                "grad_norm": [stats["grad_norm"], expected["grad_norm"]],
            }
    if resume:
        report["resume"] = _resume(ranks, base, Path(out).parent / "checkpoint", fsdp)
    if ranks.is_main:
        Path(out).write_text(json.dumps(report))
    ranks.close()


def _fresh(base, config):
    from espl.rl.trainer import LoRATrainer

    trainer = LoRATrainer(copy.deepcopy(base), config)
    _start_b(trainer)
    return trainer


def _parameter_bytes(trainer, base, ranks) -> dict:
    """What the sharded trainer's rank holds against the whole base, summed over the ranks too."""
    from espl.rl.sharding import sharded_bytes

    held = sharded_bytes(trainer.model)
    layers = sum(p.numel() * p.element_size() for p in base.model.layers.parameters())
    return {"rank": held, "sharded_all_ranks": sum(ranks.gather(held["sharded"])), "decoder_layers": layers,
            "base": sum(p.numel() * p.element_size() for p in base.parameters())}


def _resume(ranks, base, checkpoint: Path, fsdp: bool = False) -> dict:
    """Two steps straight, against one step, a checkpoint (written by rank 0, loaded by every
    rank into a new trainer) and the second step; and what rank 0 wrote after the first step
    (the checkpoint's and the published adapter's tensors) against one process's first step."""
    from espl.rl.checkpoint import load_checkpoint, save_checkpoint
    from espl.rl.trainer import LoRATrainer

    config = trainer_config("grpo", "token_mean", "mini_batches_recomputed")
    first, second = trajectories(12, seed=1), trajectories(12, seed=2)
    straight = LoRATrainer(copy.deepcopy(base), dataclasses.replace(config, fsdp=fsdp), distributed=ranks)
    straight.step(*first)
    written: dict = {}
    if ranks.is_main:
        save_checkpoint(straight, checkpoint)
        written = _written_against_one_process(straight, base, config, first, checkpoint)
    ranks.broadcast("saved")  # the others read it only once it is written
    expected = straight.step(*second)
    resumed = LoRATrainer(copy.deepcopy(base), dataclasses.replace(config, fsdp=fsdp), distributed=ranks)
    load_checkpoint(resumed, checkpoint)
    stats = resumed.step(*second)
    differences = ranks.gather(max_difference(lora(straight), lora(resumed)))
    return {"max_lora_difference": max(differences), "loss": [stats["loss"], expected["loss"]],
            "step": [resumed.step_count, straight.step_count], **written}


def _written_against_one_process(trainer, base, config, batch, checkpoint: Path) -> dict:
    """max |tensor written by rank 0 - one process's LoRA| over the checkpoint and a published adapter."""
    from safetensors.torch import load_file

    from espl.rl.trainer import LoRATrainer

    reference = LoRATrainer(copy.deepcopy(base), config)
    reference.step(*batch)
    expected = lora(reference)
    saved = torch.load(checkpoint / "trainer.pt", map_location="cpu", weights_only=True)["adapters"]["policy"]
    published = trainer.publish(str(checkpoint.parent / "published"))
    files = load_file(str(Path(published.path) / "adapter_model.safetensors"))  # peft's names: ours, adapter name dropped
    return {"checkpoint_difference": max_difference(saved, expected), "published_difference": max_difference(files, expected)}
