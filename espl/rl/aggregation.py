"""Token aggregation: how a [B, T] matrix of per-token losses becomes one scalar.

The choice matters because it sets the relative weight of long and short sequences (Adam makes
the overall scale nearly irrelevant, the relative weights are what change the update). The
names follow verl's `loss_agg_mode`, with underscores:

- `token_sum`: sum over every unmasked token of every sequence, no normalisation. This is what
  a hosted `importance_sampling` loss computes (`-(ratio * A).sum()`), and what E-SPL trained
  with: a long response weighs in proportion to its length, and the scale grows with the batch.
- `seq_mean_token_sum`: sum over the tokens of each sequence, mean over sequences. Same
  relative weights as `token_sum`, but independent of the batch size.
- `token_mean`: mean over all unmasked tokens of the batch (DAPO, CISPO): every token weighs
  the same, whichever sequence it belongs to.
- `seq_mean_token_mean`: mean over the tokens of each sequence, then mean over sequences
  (the original GRPO): every sequence weighs the same, so tokens of long ones weigh less.
- `seq_mean_token_sum_norm`: sum over the tokens of each sequence divided by a constant
  `max_tokens` (the generation budget), then mean over sequences (Dr. GRPO). Removes the
  per-sequence length normalisation without making the scale depend on the batch's lengths.

Sequence means run over sequences that hold at least one unmasked token, so a sequence whose
mask is all zero (for example a dropped group left in the batch) changes nothing. Masked
positions may hold any value, even inf or nan: they are selected away, never multiplied by 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

Aggregation = Literal[
    "token_sum",
    "seq_mean_token_sum",
    "token_mean",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
]
AGGREGATIONS: tuple[str, ...] = get_args(Aggregation)


def check_aggregation(name: str) -> None:
    """Raise a clear error for an unknown aggregation name."""
    if name not in AGGREGATIONS:
        raise ValueError(f"unknown token aggregation {name!r}; expected one of {AGGREGATIONS}")


def masked_values(values: Tensor, mask: Tensor) -> Tensor:
    """`values` with masked-out positions set to exactly 0 (safe against inf/nan there)."""
    return torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))


def aggregate_tokens(
    per_token: Tensor,
    mask: Tensor,
    mode: str,
    *,
    max_tokens: int | None = None,
) -> Tensor:
    """Reduce `per_token` [B, T] over the positions where `mask` [B, T] is true to a scalar.

    `max_tokens` is the constant divisor of `seq_mean_token_sum_norm`; it defaults to T, the
    padded length of the batch (pass the sampling `max_tokens` to match Dr. GRPO exactly).
    """
    check_aggregation(mode)
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"per-token values {tuple(per_token.shape)} and mask {tuple(mask.shape)} "
            "must both be [B, T]"
        )
    mask = mask.bool()
    values = masked_values(per_token, mask)
    if mode == "token_sum":
        return values.sum()
    if mode == "token_mean":
        return values.sum() / mask.sum().clamp(min=1)

    tokens_per_seq = mask.sum(dim=1)
    sums_per_seq = values.sum(dim=1)
    if mode == "seq_mean_token_mean":
        per_seq = sums_per_seq / tokens_per_seq.clamp(min=1)
    elif mode == "seq_mean_token_sum_norm":
        divisor = per_token.shape[1] if max_tokens is None else max_tokens
        if divisor <= 0:
            raise ValueError(f"max_tokens must be positive, got {divisor}")
        per_seq = sums_per_seq / divisor
    else:  # seq_mean_token_sum
        per_seq = sums_per_seq
    non_empty = tokens_per_seq > 0
    return masked_values(per_seq, non_empty).sum() / non_empty.sum().clamp(min=1)


def token_mean(per_token: Tensor, mask: Tensor) -> Tensor:
    """Mean over unmasked tokens; the reduction used for reported statistics."""
    return aggregate_tokens(per_token, mask, "token_mean")
