"""Training in several processes (`torchrun`): who this process is, and the collectives the trainer uses.

Every rank holds the whole batch and the same LoRA weights. Each optimizer step's
micro-batches are split between the ranks (`share`, balanced by the tokens each runs); each
rank accumulates the gradients of its share, scaled by the normalisers of the whole
mini-batch, and the LoRA gradients are summed over the ranks (`sum_gradients`). Every rank
then applies the same summed gradient, which is the gradient one process would have
accumulated, so the weights and the optimizer state stay identical on every rank.

Two process groups: the default one (gloo, on CPU tensors) carries messages and small objects
and waits as long as rank 0 needs between steps (rollouts, evaluation, evolution:
`WAIT_TIMEOUT_S`); the gradient group uses the backend of the model's device (NCCL for CUDA,
gloo otherwise) with a shorter timeout (`STEP_TIMEOUT_S`), since the ranks reach it together.
A rank that dies makes `torchrun` stop the others; the timeouts keep a lost rank from
holding the rest forever when they run under another launcher.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

WAIT_TIMEOUT_S = float(os.environ.get("ESPL_DIST_WAIT_TIMEOUT_S", 4 * 3600))
"""How long a rank waits for the next message from rank 0 (which runs rollouts meanwhile)."""
STEP_TIMEOUT_S = float(os.environ.get("ESPL_DIST_STEP_TIMEOUT_S", 1800))
"""How long a gradient sum waits for the slowest rank."""


@dataclass
class DistributedContext:
    """This process's place among the ranks; one process alone is rank 0 of 1 (every call a no-op)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    gradient_group: Any = None
    """The group gradients are summed over (set by `attach`); None: the default group."""
    attached: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """The context `torchrun` describes (WORLD_SIZE, RANK, LOCAL_RANK and the rendezvous
        variables); a process started without them runs alone, and nothing is initialised."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("gloo", timeout=timedelta(seconds=WAIT_TIMEOUT_S))
        return cls(rank=dist.get_rank(), world_size=dist.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())))

    def local_device(self, device: str) -> str:
        """The device this rank trains on: its own GPU (LOCAL_RANK) when the run asks for CUDA."""
        if not self.enabled or not device.startswith("cuda"):
            return device
        import torch

        torch.cuda.set_device(self.local_rank)
        return f"cuda:{self.local_rank}"

    def attach(self, device: str) -> None:
        """Create the gradient group for tensors on `device` (every rank calls this, in the same
        order as the rest of the collectives): NCCL for CUDA, gloo otherwise."""
        if not self.enabled or self.attached:
            return
        import torch
        import torch.distributed as dist

        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        self.gradient_group = dist.new_group(backend=backend, timeout=timedelta(seconds=STEP_TIMEOUT_S))
        self.attached = True

    # -- messages (default group, CPU) -------------------------------------------------------
    def broadcast(self, value: Any = None) -> Any:
        """Rank 0's `value` on every rank (pickled over the process group, between our own ranks)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's `value`, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    # -- tensors (gradient group) -------------------------------------------------------------
    def sum_gradients(self, parameters: Sequence[torch.Tensor]) -> None:
        """Replace each parameter's gradient by its sum over the ranks, in one flat all-reduce.

        A rank that ran no micro-batch has no gradients; a parameter gets a gradient after the
        sum when any rank had one, so the optimizer treats it as one process would have."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        device = parameters[0].device
        present = torch.tensor([p.grad is not None for p in parameters], dtype=torch.float32, device=device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float()
                          for p in parameters] + [present])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.gradient_group)
        offset = 0
        for index, p in enumerate(parameters):
            count = p.numel()
            if flat[-len(parameters) + index] > 0:
                p.grad = flat[offset : offset + count].view_as(p).to(p.dtype).clone()
            offset += count

    def broadcast_parameters(self, parameters: Sequence[torch.Tensor]) -> None:
        """Rank 0's values of `parameters` on every rank (the starting LoRA weights)."""
        if not self.enabled:
            return
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for p in parameters:
                dist.broadcast(p.data, src=0, group=self.gradient_group)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def share(costs: Sequence[int], world_size: int, rank: int) -> list[int]:
    """The micro-batches (indices into `costs`, in their original order) that `rank` runs.

    Largest first, each to the rank with the least work so far (ties: the lower rank): the
    same answer on every rank, and no rank runs much more than the others. Which rank runs
    a micro-batch changes only the order of a sum, never which terms are in it."""
    loads = [0] * world_size
    mine = []
    for index in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        target = min(range(world_size), key=lambda r: (loads[r], r))
        loads[target] += costs[index]
        if target == rank:
            mine.append(index)
    return sorted(mine)
