"""Group-relative advantages: each sample's reward compared with the other samples of its group.

A group is every sample that shares a key. For E-SPL the key is (system prompt id, problem id),
so a prompt is only ever compared with itself on the same problem, N samples per group.

Modes:
- `espl`: `A = r - mean(r of the group)`, no std normalisation. Groups whose advantages are
  all zero (every sample got the same reward) carry no learning signal and are dropped by
  default (the keep mask is false for them).
- `grpo`: `A = (r - mean) / (std + eps)`, with the unbiased (n - 1) std of the group, as in
  GRPO. A group of one has std 1 here (its advantage is 0 anyway).
- `dr_grpo`: `A = r - mean` (Dr. GRPO removes the std division, which over-weights groups of
  nearly equal rewards). Nothing is dropped by default.
- `none`: `A = r`, the raw reward (plain REINFORCE without a baseline).

Every mode returns a keep mask; set `drop_zero_groups` to override the mode's default.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

AdvantageMode = Literal["espl", "grpo", "dr_grpo", "none"]
ADVANTAGE_MODES: tuple[str, ...] = get_args(AdvantageMode)


@dataclass(frozen=True)
class GroupAdvantages:
    """Advantages of N samples, all shaped [N] and in the order of the input rewards."""

    advantages: Tensor
    """float advantages; exactly 0 for dropped samples (filter them out with `keep`)."""
    keep: Tensor
    """bool: false for samples of dropped groups."""
    group_index: Tensor
    """long: dense group number of each sample (0..G-1, in order of first appearance)."""
    num_groups: int

    @property
    def num_kept(self) -> int:
        return int(self.keep.sum())


def group_indices(group_keys: Sequence[Hashable] | Tensor) -> tuple[Tensor, int]:
    """Map arbitrary hashable keys (or an int tensor) to dense group numbers [N] and G."""
    if isinstance(group_keys, Tensor):
        if group_keys.dim() != 1:
            raise ValueError(f"group keys tensor must be 1-D, got shape {tuple(group_keys.shape)}")
        uniques, inverse = torch.unique(group_keys, return_inverse=True)
        return inverse.long(), int(uniques.numel())
    numbering: dict[Hashable, int] = {}
    index = [numbering.setdefault(key, len(numbering)) for key in group_keys]
    return torch.tensor(index, dtype=torch.long), len(numbering)


def compute_advantages(
    rewards: Sequence[float] | Tensor,
    group_keys: Sequence[Hashable] | Tensor,
    mode: str = "espl",
    *,
    eps: float = 1e-6,
    drop_zero_groups: bool | None = None,
    zero_tol: float = 0.0,
) -> GroupAdvantages:
    """Advantages of `rewards` [N] within the groups given by `group_keys` (N keys).

    `drop_zero_groups` defaults to true for `espl` and false otherwise. A group counts as
    all-zero when the spread of its rewards (max - min) is at most `zero_tol`, which tests the
    same thing as "every advantage is 0" without float round-off from the mean.
    """
    if mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode {mode!r}; expected one of {ADVANTAGE_MODES}")
    reward_tensor = torch.as_tensor(rewards)
    if not reward_tensor.is_floating_point():
        reward_tensor = reward_tensor.to(torch.get_default_dtype())
    if reward_tensor.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(reward_tensor.shape)}")
    if not torch.isfinite(reward_tensor).all():
        raise ValueError("rewards must be finite (record a failed rollout as reward 0)")
    index, num_groups = group_indices(group_keys)
    index = index.to(reward_tensor.device)
    if index.numel() != reward_tensor.numel():
        raise ValueError(f"{reward_tensor.numel()} rewards but {index.numel()} group keys")

    zeros = reward_tensor.new_zeros(num_groups)
    counts = zeros.index_add(0, index, torch.ones_like(reward_tensor))
    means = zeros.index_add(0, index, reward_tensor) / counts
    centred = reward_tensor - means[index]

    if mode == "none":
        advantages = reward_tensor.clone()
    elif mode == "grpo":
        squares = zeros.index_add(0, index, centred.square())
        std = torch.where(counts > 1, (squares / (counts - 1).clamp(min=1)).sqrt(), 1.0)
        advantages = centred / (std[index] + eps)
    else:  # espl, dr_grpo
        advantages = centred

    if drop_zero_groups is None:
        drop_zero_groups = mode == "espl"
    if drop_zero_groups:
        group_max = zeros.scatter_reduce(0, index, reward_tensor, "amax", include_self=False)
        group_min = zeros.scatter_reduce(0, index, reward_tensor, "amin", include_self=False)
        informative = (group_max - group_min) > zero_tol
        keep = informative[index]
        advantages = torch.where(keep, advantages, 0.0)
    else:
        keep = torch.ones_like(reward_tensor, dtype=torch.bool)
    return GroupAdvantages(
        advantages=advantages, keep=keep, group_index=index, num_groups=num_groups
    )
