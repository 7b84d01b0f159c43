"""How one batch of rollouts becomes optimizer steps, and how their statistics add up.

A batch is `epochs` passes over its kept sequences, each pass shuffled (seeded) and split
into `mini_batches` near-equal mini-batches, one optimizer step each; within a step,
micro-batches accumulate gradients so that memory stays bounded. E-SPL takes one step on the
whole batch (1 x 1); EMA-PG's search runs take several, which is what lets the PPO clip and
the top-k KL's importance weight act (on the first step of a batch the ratio is 1).

Within one optimizer step each micro-batch's loss is scaled by its share of the step's
normaliser (tokens or sequences, depending on the aggregation), so the accumulated gradient
is exactly that of the step's whole mini-batch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from torch import Tensor

from agents.trajectory import Trajectory

LOSS_STATS = frozenset({"loss", "pg_loss", "kl_loss"})
"""Stats that add up across micro-batches like the loss does (with its weights)."""


def mini_batch_rows(count: int, mini_batches: int, epochs: int, *, seed: str) -> list[list[int]]:
    """The rows (indices into the kept sequences) of each optimizer step, in order.

    One mini-batch keeps the batch's order; more are drawn from a permutation seeded by
    `seed` and the epoch (a string, so that the run's seed and the batch number pick it and
    a resumed run draws the same), split into pieces whose sizes differ by at most one.
    """
    if mini_batches < 1 or epochs < 1:
        raise ValueError(f"need mini_batches >= 1 and epochs >= 1, got {mini_batches} and {epochs}")
    pieces = min(mini_batches, count)
    steps = []
    for epoch in range(epochs):
        order = list(range(count))
        if pieces > 1:
            random.Random(f"{seed}:{epoch}").shuffle(order)
        bounds = [round(k * count / pieces) for k in range(pieces + 1)]
        steps += [sorted(order[bounds[k] : bounds[k + 1]]) for k in range(pieces)]
    return steps


def combine_steps(steps: Sequence[dict[str, float]], epochs: int) -> dict[str, float]:
    """One batch's stats from its optimizer steps': extremes as extremes, counts as one pass
    over the batch (summed, divided by the epochs), everything else the mean over steps.
    A single step's stats come back as they are."""
    if len(steps) == 1:
        return dict(steps[0])
    out: dict[str, float] = {}
    for key in steps[0]:
        values = [step[key] for step in steps if key in step]
        if key.endswith("_max"):
            out[key] = max(values)
        elif key.endswith("_min"):
            out[key] = min(values)
        elif key.startswith("num_"):
            out[key] = sum(values) / epochs
        else:
            out[key] = sum(values) / len(values)
    return out


def accumulate_stats(sums: dict[str, float], stats: dict[str, Tensor], *, loss_weight: float, token_share: float) -> None:
    """Fold one micro-batch's stats into the step's: loss terms as the loss, extremes as
    extremes, counts as sums and per-token means weighted by the micro-batch's tokens."""
    for key, tensor in stats.items():
        value = float(tensor)
        if key in LOSS_STATS:
            sums[key] = sums.get(key, 0.0) + value * loss_weight
        elif key.endswith("_max"):
            sums[key] = max(sums.get(key, value), value)
        elif key.endswith("_min"):
            sums[key] = min(sums.get(key, value), value)
        elif key.startswith("num_"):
            sums[key] = sums.get(key, 0.0) + value
        else:
            sums[key] = sums.get(key, 0.0) + value * token_share


def merge_stats(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """One step's stats from those each rank accumulated over its share of the micro-batches
    (`accumulate_stats`): extremes as extremes, everything else (already weighted) summed."""
    if len(parts) == 1:
        return dict(parts[0])
    out: dict[str, float] = {}
    for part in parts:
        for key, value in part.items():
            if key not in out:
                out[key] = value
            elif key.endswith("_max"):
                out[key] = max(out[key], value)
            elif key.endswith("_min"):
                out[key] = min(out[key], value)
            else:
                out[key] += value
    return out


def normalisers(trajectories: Sequence[Trajectory]) -> dict[str, int]:
    """Totals that token/sequence means divide by (targets are ids[1:])."""
    tokens = sum(sum(t.loss_mask[1:]) for t in trajectories)
    sequences = sum(1 for t in trajectories if sum(t.loss_mask[1:]) > 0)
    return {"tokens": tokens, "sequences": sequences}


def micro_weight(aggregation: str, mask: Tensor, totals: dict[str, int]) -> float:
    """This micro-batch's share of the step's normaliser, so accumulated grads equal the step's."""
    if aggregation == "token_sum":
        return 1.0
    if aggregation == "token_mean":
        return float(mask.sum()) / max(totals["tokens"], 1)
    return float((mask.sum(dim=1) > 0).sum()) / max(totals["sequences"], 1)


def masked_positions(trajectory: Trajectory) -> list[int]:
    """Token positions whose logprob the loss reads (targets on policy tokens), in order."""
    mask = trajectory.loss_mask
    return [j for j in range(1, len(mask)) if mask[j]]
