"""Exponential moving average of parameters: the slowly moving anchor of EMA-PG.

`anchor <- eta * anchor + (1 - eta) * policy`, applied every P optimizer steps (EMA-PG uses
eta 0.9 with P 10 for search, eta 0.95 for math). With LoRA both dicts hold adapter tensors
only, so the anchor costs one extra adapter, not a second copy of the base model.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import torch
from torch import Tensor


@torch.no_grad()
def ema_update_(
    anchor: MutableMapping[str, Tensor], policy: Mapping[str, Tensor], eta: float
) -> None:
    """Move every anchor tensor toward the policy tensor of the same name, in place.

    Both dicts must have the same names and shapes; the anchor keeps its own dtype and device
    (an fp32 anchor may track a bf16 policy). `eta = 1` freezes the anchor, `eta = 0` copies
    the policy.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    missing = set(policy) - set(anchor)
    extra = set(anchor) - set(policy)
    if missing or extra:
        raise KeyError(
            f"anchor and policy names differ: missing from anchor {sorted(missing)}, "
            f"not in policy {sorted(extra)}"
        )
    for name, anchor_tensor in anchor.items():
        policy_tensor = policy[name]
        if anchor_tensor.shape != policy_tensor.shape:
            raise ValueError(
                f"{name}: anchor shape {tuple(anchor_tensor.shape)} "
                f"!= policy shape {tuple(policy_tensor.shape)}"
            )
        target = policy_tensor.detach().to(device=anchor_tensor.device, dtype=anchor_tensor.dtype)
        anchor_tensor.lerp_(target, 1.0 - eta)
