"""From trajectories to padded training micro-batches, and their final hidden states under a model.

Position t of a sequence predicts token t+1, so a trajectory of L ids gives L-1 targets; the
loss mask and the sampling logprobs shift with them. Hidden states are kept only at masked
(policy) positions, and logits are computed from them a chunk at a time (`espl.rl.logits`):
the [B, T, V] logits tensor of a full forward would dominate memory at a 152k-token
vocabulary. The samples of a group share their prompt, so a micro-batch runs
each distinct prompt once and only the rest of every sequence per row (`SharedPrefix`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from agents.trajectory import Trajectory


@dataclass
class SharedPrefix:
    """Leading tokens that several rows of a micro-batch have in common, run once.

    The samples of a group share their prompt, which is usually longer than each reply: one
    forward over each distinct prompt, its keys/values copied to every row, then a forward
    over each row's own tokens gives the same hidden states (causal attention: a prompt
    token never sees what follows) for much less compute and activation memory.
    """

    input_ids: Tensor  # [g, s] left-padded distinct prefixes
    attention_mask: Tensor  # [g, s]
    rows: Tensor  # [b] the prefix of each row


@dataclass
class MicroBatch:
    input_ids: Tensor  # [b, t] right-padded (the tokens after the shared prefix, if any)
    attention_mask: Tensor  # [b, t]
    targets: Tensor  # [b, t] next tokens (0 where padded)
    mask: Tensor  # [b, t] bool, true on policy tokens
    old_logprobs: Tensor  # [b, t] the old policy's logprobs of the targets (the ratio's denominator)
    advantages: Tensor  # [b]
    rows: list[int]  # indices into the step's trajectory list
    prefix: SharedPrefix | None = None
    sampler_logprobs: Tensor | None = None
    """[b, t] the engine's sampling logprobs, when `old_logprobs` were recomputed by the trainer."""


@dataclass
class MicroBatchPlan:
    """Which rows one micro-batch holds and how they are cut, before any tensor is built."""

    rows: list[int]
    cuts: list[int]
    """Leading tokens of each row that run as its shared prefix (0: none)."""
    prefixes: list[tuple[int, ...]] | None

    def cost(self, trajectories: Sequence[Trajectory]) -> int:
        """Padded tokens the forward runs: the rows' own tokens plus each distinct prefix once."""
        width = max(len(trajectories[i].token_ids) - 1 - cut for i, cut in zip(self.rows, self.cuts))
        prefix = 0 if self.prefixes is None else len(set(self.prefixes)) * max(len(p) for p in self.prefixes)
        return len(self.rows) * width + prefix


def micro_batches(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[float],
    size: int,
    *,
    pad_id: int,
    device: str | torch.device = "cpu",
    share_prefix: bool = True,
    old_logprobs: Sequence[Sequence[float]] | None = None,
) -> Iterator[MicroBatch]:
    """Micro-batches of at most `size` sequences (`plan_micro_batches`), built one at a time.

    `old_logprobs` (one list per trajectory, aligned with its token ids) replaces the
    trajectories' sampling logprobs as the ratio's denominator; those then come along as
    `sampler_logprobs`.
    """
    for plan in plan_micro_batches(trajectories, size, share_prefix=share_prefix):
        yield build_micro_batch(trajectories, advantages, plan, pad_id=pad_id, device=device, old_logprobs=old_logprobs)


def plan_micro_batches(trajectories: Sequence[Trajectory], size: int, *, share_prefix: bool = True) -> list[MicroBatchPlan]:
    """The rows of each micro-batch of at most `size` sequences.

    Without `share_prefix`: length-sorted (less padding). With it: rows that share their
    prompt (everything before the first policy token) sit together, and a micro-batch that
    holds fewer distinct prompts than rows runs each prompt once (`SharedPrefix`).
    """
    length = [len(t.token_ids) for t in trajectories]
    keys = [tuple(t.token_ids[: prefix_cut(t)]) if share_prefix else () for t in trajectories]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    ordered = sorted(groups.values(), key=lambda group: max(length[i] for i in group))
    order = [i for group in ordered for i in sorted(group, key=length.__getitem__)]
    plans = []
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        prefixes = [keys[i] for i in rows]
        if len(set(prefixes)) < len(rows) and all(prefixes):
            plans.append(MicroBatchPlan(rows, [len(p) for p in prefixes], prefixes))
        else:
            plans.append(MicroBatchPlan(rows, [0] * len(rows), None))
    return plans


def build_micro_batch(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[float],
    plan: MicroBatchPlan,
    *,
    pad_id: int,
    device: str | torch.device = "cpu",
    old_logprobs: Sequence[Sequence[float]] | None = None,
) -> MicroBatch:
    """The tensors of one planned micro-batch, on `device`."""
    return _batch(trajectories, advantages, plan.rows, plan.cuts, plan.prefixes, pad_id, device, old_logprobs)


def prefix_cut(trajectory: Trajectory) -> int:
    """How many leading tokens can run as a shared prefix: all before the token that
    predicts the first policy token (0 when there is none)."""
    mask = trajectory.loss_mask
    first = next((j for j in range(1, len(mask)) if mask[j]), None)
    return 0 if first is None else first - 1


def _batch(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[float],
    rows: list[int],
    cuts: list[int],
    prefixes: list[tuple[int, ...]] | None,
    pad_id: int,
    device: str | torch.device,
    old_logprobs: Sequence[Sequence[float]] | None = None,
) -> MicroBatch:
    b = len(rows)
    length = max(len(trajectories[i].token_ids) - 1 - cut for i, cut in zip(rows, cuts))
    input_ids = torch.full((b, length), pad_id, dtype=torch.long)
    targets = torch.zeros((b, length), dtype=torch.long)
    attention = torch.zeros((b, length), dtype=torch.long)
    mask = torch.zeros((b, length), dtype=torch.bool)
    old = torch.zeros((b, length), dtype=torch.float32)
    sampler = torch.zeros((b, length), dtype=torch.float32) if old_logprobs is not None else None
    for r, (i, cut) in enumerate(zip(rows, cuts)):
        t = trajectories[i]
        n = len(t.token_ids) - 1 - cut
        input_ids[r, :n] = torch.tensor(t.token_ids[cut:-1])
        targets[r, :n] = torch.tensor(t.token_ids[cut + 1 :])
        attention[r, :n] = 1
        mask[r, :n] = torch.tensor(t.loss_mask[cut + 1 :], dtype=torch.bool)
        if old_logprobs is None:
            old[r, :n] = torch.tensor(t.logprobs[cut + 1 :], dtype=torch.float32)
        else:
            old[r, :n] = torch.tensor(old_logprobs[i][cut + 1 :], dtype=torch.float32)
            sampler[r, :n] = torch.tensor(t.logprobs[cut + 1 :], dtype=torch.float32)  # type: ignore[index]
    shared = None
    if prefixes is not None:
        distinct = list(dict.fromkeys(prefixes))
        width = max(len(p) for p in distinct)
        prefix_ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
        prefix_attention = torch.zeros((len(distinct), width), dtype=torch.long)
        for g, prefix in enumerate(distinct):
            prefix_ids[g, width - len(prefix) :] = torch.tensor(prefix)
            prefix_attention[g, width - len(prefix) :] = 1
        index = {prefix: g for g, prefix in enumerate(distinct)}
        shared = SharedPrefix(prefix_ids.to(device), prefix_attention.to(device),
                              torch.tensor([index[p] for p in prefixes], device=device))
    return MicroBatch(
        input_ids.to(device),
        attention.to(device),
        targets.to(device),
        mask.to(device),
        old.to(device),
        torch.tensor([float(advantages[i]) for i in rows], device=device),
        rows,
        shared,
        None if sampler is None else sampler.to(device),
    )


def masked_hidden(model: Any, batch: MicroBatch) -> Tensor:
    """Final hidden states [N, H] at the policy positions (N = mask.sum()), in mask order.

    A shared prefix runs through a key/value cache, which checkpointed layers drop (they
    would run each row without its prompt): that combination is refused, not computed.
    """
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    if batch.prefix is None:
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         use_cache=False).last_hidden_state
        return hidden[batch.mask]
    if model.training and getattr(model, "is_gradient_checkpointing", False):
        raise ValueError("a shared prefix cannot run through checkpointed layers (they drop its key/value cache): "
                         "build the micro-batches with share_prefix=False under gradient checkpointing")
    from transformers import DynamicCache

    prefix = batch.prefix
    cache = DynamicCache(config=model.config)
    decoder(input_ids=prefix.input_ids, attention_mask=prefix.attention_mask,
            position_ids=(prefix.attention_mask.cumsum(-1) - 1).clamp(min=0), past_key_values=cache, use_cache=True)
    cache.batch_select_indices(prefix.rows)  # differentiable: each row's gradient flows to its prompt
    attention = torch.cat([prefix.attention_mask[prefix.rows], batch.attention_mask], dim=-1)
    start = prefix.attention_mask.sum(-1)[prefix.rows, None]
    positions = start + torch.arange(batch.input_ids.shape[1], device=start.device)
    hidden = decoder(input_ids=batch.input_ids, attention_mask=attention, position_ids=positions,
                     past_key_values=cache, use_cache=True).last_hidden_state
    return hidden[batch.mask]


def scatter_rows(values: Tensor, mask: Tensor) -> Tensor:
    """Put row values [N] back into a [b, t] tensor at the mask's positions (0 elsewhere)."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)
