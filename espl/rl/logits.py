"""Per-token values from the output layer, a chunk of rows at a time, recomputed in backward.

The logits of N policy tokens are [N, V]: 600 KB per token in fp32 at a 152k vocabulary, so
keeping them for backward (as autograd does for log-softmax) would make the trainer's memory
grow with tokens x vocabulary. Here each chunk of rows runs inside a non-reentrant
`torch.utils.checkpoint`: the forward keeps only the chunk's hidden states [chunk, H] and its
per-row outputs, and the backward computes the chunk's logits again (one more output-layer
matmul per chunk). Memory then grows with chunk x vocabulary; without autograd (reference
and old logprobs) the chunks simply run one after another.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from espl.rl.kl import gather_topk_logprobs, sampling_topk_ids, topk_reverse_kl

LOGIT_CHUNK = 2048
"""Rows of logits alive at once: 2048 x 152k fp32 logits are 1.25 GB (a few such buffers at
the peak of a chunk's backward)."""


def output_layer(model: Any) -> Any:
    return model.get_output_embeddings()


def over_chunks(
    function: Callable[..., tuple[Tensor, ...]], rows: tuple[Tensor, ...], chunk: int
) -> tuple[Tensor, ...]:
    """`function` on each chunk of `rows` (tensors with the same first dimension N), its
    outputs (tensors [chunk, ...]) concatenated; checkpointed when autograd records."""
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, got {chunk}")
    n = rows[0].shape[0]
    records = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in rows)
    pieces: list[tuple[Tensor, ...]] = []
    for start in range(0, n, chunk):
        part = tuple(tensor[start : start + chunk] for tensor in rows)
        pieces.append(checkpoint(function, *part, use_reentrant=False) if records else function(*part))
    if not pieces:  # no rows: run once on the empty inputs for the outputs' shapes and dtypes
        return function(*rows)
    return tuple(torch.cat(outputs) for outputs in zip(*pieces))


def token_logprobs(model: Any, hidden: Tensor, targets: Tensor, *, temperature: float = 1.0,
                   chunk: int = LOGIT_CHUNK) -> Tensor:
    """log softmax(lm_head(hidden) / temperature)[target] for each row of hidden [N, H]."""
    head = output_layer(model)

    def rows(hidden: Tensor, targets: Tensor) -> tuple[Tensor]:
        logits = head(hidden).float() / temperature
        chosen = logits.gather(-1, targets[:, None]).squeeze(-1)
        return (chosen - torch.logsumexp(logits, dim=-1),)

    return over_chunks(rows, (hidden, targets), chunk)[0]


def topk_kl_rows(
    model: Any,
    hidden: Tensor,
    anchor_hidden: Tensor,
    targets: Tensor,
    old_logprobs: Tensor,
    *,
    k: int,
    form: str,
    temperature: float = 1.0,
    anchor_scope: Callable[[], AbstractContextManager[Any]] = nullcontext,
    chunk: int = LOGIT_CHUNK,
) -> tuple[Tensor, Tensor]:
    """Per policy token: the policy's logprob of its target and EMA-PG's top-k reverse KL
    (`espl.rl.kl.topk_reverse_kl`) to the anchor, both [N], with the top-k ids taken from
    the policy's own logits (`sampling_topk_ids`).

    `hidden` [N, H] are the policy's final hidden states (they carry the gradient),
    `anchor_hidden` the anchor's (no gradient); `anchor_scope()` makes the output layer the
    anchor's while its logits are computed (needed only when the output layer is adapted).
    """
    head = output_layer(model)

    def rows(hidden: Tensor, anchor_hidden: Tensor, targets: Tensor, old: Tensor) -> tuple[Tensor, Tensor]:
        logits = head(hidden).float()[None] / temperature
        with torch.no_grad(), anchor_scope():
            anchor_logits = head(anchor_hidden).float()[None] / temperature
        gathered = gather_topk_logprobs(logits, anchor_logits, targets[None], sampling_topk_ids(logits, k))
        return gathered.policy_token[0], topk_reverse_kl(gathered, old[None], form=form)[0]

    logprobs, kl = over_chunks(rows, (hidden, anchor_hidden.detach(), targets, old_logprobs), chunk)
    return logprobs, kl
