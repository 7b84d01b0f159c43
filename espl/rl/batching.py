"""From trajectories to padded training micro-batches, and per-token logprobs under a model.

Position t of a sequence predicts token t+1, so a trajectory of L ids gives L-1 targets; the
loss mask and the sampling logprobs shift with them. Logits are computed only at masked
(policy) positions: the [B, T, V] logits tensor of a full forward would dominate memory
for a 49k-token vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from agents.trajectory import Trajectory

LOGIT_CHUNK = 2048
"""Rows of logits materialised at once when only logprobs are needed."""


@dataclass
class MicroBatch:
    input_ids: Tensor  # [b, t] right-padded
    attention_mask: Tensor  # [b, t]
    targets: Tensor  # [b, t] next tokens (0 where padded)
    mask: Tensor  # [b, t] bool, true on policy tokens
    old_logprobs: Tensor  # [b, t] sampling logprobs of the targets
    advantages: Tensor  # [b]
    rows: list[int]  # indices into the step's trajectory list


def micro_batches(
    trajectories: Sequence[Trajectory],
    advantages: Sequence[float],
    size: int,
    *,
    pad_id: int,
    device: str | torch.device = "cpu",
) -> Iterator[MicroBatch]:
    """Length-sorted micro-batches of at most `size` sequences (less padding per batch)."""
    order = sorted(range(len(trajectories)), key=lambda i: len(trajectories[i].token_ids))
    for start in range(0, len(order), size):
        rows = order[start : start + size]
        length = max(len(trajectories[i].token_ids) for i in rows) - 1
        b = len(rows)
        input_ids = torch.full((b, length), pad_id, dtype=torch.long)
        targets = torch.zeros((b, length), dtype=torch.long)
        attention = torch.zeros((b, length), dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.bool)
        old = torch.zeros((b, length), dtype=torch.float32)
        for r, i in enumerate(rows):
            t = trajectories[i]
            n = len(t.token_ids) - 1
            input_ids[r, :n] = torch.tensor(t.token_ids[:-1])
            targets[r, :n] = torch.tensor(t.token_ids[1:])
            attention[r, :n] = 1
            mask[r, :n] = torch.tensor(t.loss_mask[1:], dtype=torch.bool)
            old[r, :n] = torch.tensor(t.logprobs[1:], dtype=torch.float32)
        yield MicroBatch(
            input_ids.to(device),
            attention.to(device),
            targets.to(device),
            mask.to(device),
            old.to(device),
            torch.tensor([float(advantages[i]) for i in rows], device=device),
            rows,
        )


def masked_hidden(model: Any, batch: MicroBatch) -> Tensor:
    """Final hidden states [N, H] at the policy positions (N = mask.sum()), in mask order."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return hidden[batch.mask]


def output_layer(model: Any) -> Any:
    return model.get_output_embeddings()


def token_logprobs(model: Any, hidden: Tensor, targets: Tensor, *, temperature: float = 1.0) -> Tensor:
    """log softmax(lm_head(hidden) / temperature)[target] for each row, chunked over rows."""
    head = output_layer(model)
    pieces = []
    for start in range(0, hidden.shape[0], LOGIT_CHUNK):
        logits = head(hidden[start : start + LOGIT_CHUNK]).float() / temperature
        chosen = logits.gather(-1, targets[start : start + LOGIT_CHUNK, None]).squeeze(-1)
        pieces.append(chosen - torch.logsumexp(logits, dim=-1))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0)


def scatter_rows(values: Tensor, mask: Tensor) -> Tensor:
    """Put row values [N] back into a [b, t] tensor at the mask's positions (0 elsewhere)."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return out.masked_scatter(mask, values)
