"""The frozen base model sharded over `torchrun`'s ranks with FSDP2 (`rl.fsdp`), for a base that does not fit one GPU.

What is sharded: each decoder layer's base weights (one FSDP unit per layer: gathered just
before the layer runs, forward or backward, and freed after) and the decoder's own weights
(the root unit: the final norm, and the input embeddings unless the output layer shares them).
What stays whole on every rank: the LoRA adapters (policy and anchor), the output layer, and
embeddings the output layer shares. The output layer runs outside the decoder's forward (its
logits a chunk at a time, recomputed in backward: `espl.rl.logits`), where no FSDP hook would
gather it; for a 7B-70B base it is 1-3% of the weights.

Keeping the adapters whole keeps everything after the backward as it is with the base
replicated (`espl.rl.distributed`): the LoRA gradients are summed over the ranks by
`DistributedContext.sum_gradients`, every rank takes the same optimizer step on whole
tensors, and rank 0 alone writes checkpoints and published adapters that any process loads.
FSDP reduces no gradient here (none of its parameters requires one; `shard_base_model`
checks), so its own reduction, which averages over the ranks, never applies. A rank-32 adapter
of a 70B base with its Adam moments is about 2.5 GB per rank, against 140 GB of bf16 base.

Every FSDP forward and backward is collective: each rank must run the same passes in the same
order. `lockstep_share` gives every rank the same number of micro-batches of each shape (a
micro-batch with a shared prefix runs the decoder twice), padding a rank's share with repeats
that count for nothing (zero weight, no stats).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from espl.rl.distributed import share

if TYPE_CHECKING:
    from espl.rl.batching import MicroBatchPlan
    from espl.rl.distributed import DistributedContext
    from espl.rl.settings import TrainerConfig


def check_sharding(config: TrainerConfig, distributed: DistributedContext) -> None:
    """Refuse `rl.fsdp` where there is nothing to shard over (one process)."""
    if config.fsdp and not distributed.enabled:
        raise ValueError("rl.fsdp shards the base model over torchrun's ranks: start the run with "
                         "`torchrun --nproc-per-node N` (N >= 2), or set rl.fsdp = false")


def shard_base_model(peft_model: Any, distributed: DistributedContext, device: str) -> None:
    """Shard `peft_model`'s frozen base in place (see the module doc) onto `device`, over the
    ranks' gradient group; whatever stays whole is moved to `device` too."""
    import torch
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    decoder = peft_model.get_decoder()
    prefix = next(name for name, module in peft_model.named_modules() if module is decoder)
    inside = {id(p) for p in decoder.parameters()}
    outside = {id(p) for name, p in peft_model.named_parameters(remove_duplicate=False)
               if not name.startswith(f"{prefix}.")}
    whole = {p for name, p in peft_model.named_parameters() if "lora_" in name or id(p) in outside & inside}
    mesh = DeviceMesh.from_group(distributed.gradient_group, torch.device(device).type)
    for layer in decoder.layers:
        fully_shard(layer, mesh=mesh, ignored_params=whole)
    fully_shard(decoder, mesh=mesh, ignored_params=whole)
    trained = [name for name, p in peft_model.named_parameters() if isinstance(p, DTensor) and p.requires_grad]
    if trained:
        raise ValueError(f"rl.fsdp shards frozen base weights only, but {trained[0]} is trained")
    with torch.no_grad():
        for p in peft_model.parameters():
            if not isinstance(p, DTensor):
                p.data = p.data.to(device)
        for module in peft_model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                if buffer is not None and not isinstance(buffer, DTensor):
                    setattr(module, name, buffer.to(device))


def sharded_bytes(model: Any) -> dict[str, int]:
    """Parameter bytes this rank holds: `sharded` (its slices of the FSDP units) and `whole`."""
    from torch.distributed.tensor import DTensor

    out = {"sharded": 0, "whole": 0}
    for p in model.parameters():
        local = p.to_local() if isinstance(p, DTensor) else p
        out["sharded" if isinstance(p, DTensor) else "whole"] += local.numel() * local.element_size()
    return out


def lockstep_share(plans: Sequence[MicroBatchPlan], costs: Sequence[int], world_size: int,
                   rank: int) -> list[tuple[MicroBatchPlan, bool]]:
    """This rank's micro-batches, each with whether it counts, in the order every rank agrees on.

    Plans without a shared prefix, then plans with one, each kind shared by tokens like
    `espl.rl.distributed.share`; a rank with fewer of a kind than the most-loaded rank repeats
    the kind's cheapest plan (not counting) until the counts match, so that the k-th pass of
    every rank runs the decoder the same number of times, whatever the tensors' sizes."""
    out: list[tuple[MicroBatchPlan, bool]] = []
    for with_prefix in (False, True):
        members = [i for i, plan in enumerate(plans) if (plan.prefixes is not None) == with_prefix]
        if not members:
            continue
        member_costs = [costs[i] for i in members]
        shares = [[members[j] for j in share(member_costs, world_size, r)] for r in range(world_size)]
        filler = min(members, key=lambda i: (costs[i], i))
        mine = shares[rank]
        out += [(plans[i], True) for i in mine]
        out += [(plans[filler], False)] * (max(len(s) for s in shares) - len(mine))
    return out
