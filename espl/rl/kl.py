"""KL terms that tie the policy to a reference or an anchor, per token.

Two estimators, both returning a [B, T] tensor that the loss aggregates with its own token
aggregation and mask:

- `k3_kl`: Schulman's K3 estimate of KL(pi || pi_ref) from the logprobs of the sampled tokens,
  for a frozen reference model.
- `topk_reverse_kl`: EMA-PG's top-k estimate of the reverse KL(pi || pi_anchor), which sums
  exactly over the k most likely tokens of the sampling policy and estimates the rest of the
  vocabulary from the sampled token. It needs full-vocabulary logits of the policy and the
  anchor (or their logprobs gathered at the top-k ids and at the sampled token).

Shapes: B sequences, T positions, V vocabulary, k top-k size. Logits must be the ones the
tokens were sampled from, temperature already applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

TopKForm = Literal["corrected", "paper"]
TOPK_FORMS: tuple[str, ...] = get_args(TopKForm)
DEFAULT_TOPK = 32


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor, *, max_log_ratio: float = 20.0) -> Tensor:
    """K3 estimate of KL(pi || pi_ref) per token: `exp(d) - d - 1` with `d = log pi_ref - log pi`.

    `logprobs` [B, T] are the policy's logprobs of tokens sampled from the policy (they carry
    the gradient); `ref_logprobs` [B, T] the reference's logprobs of the same tokens. The
    estimate is unbiased and never negative. `d` is clamped to +-`max_log_ratio` so that a
    token the reference finds impossible gives a large finite value, not inf.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"shapes differ: {tuple(logprobs.shape)} vs {tuple(ref_logprobs.shape)}")
    log_ratio = (ref_logprobs.detach() - logprobs).clamp(-max_log_ratio, max_log_ratio)
    return log_ratio.exp() - log_ratio - 1.0


@dataclass(frozen=True)
class TopKLogprobs:
    """Full-vocabulary-normalised logprobs gathered where the top-k KL needs them."""

    policy_topk: Tensor
    """[B, T, k] log pi(j) for j in q, the sampling policy's top-k ids; carries the gradient."""
    anchor_topk: Tensor
    """[B, T, k] log pi_anchor(j) for the same ids."""
    policy_token: Tensor
    """[B, T] log pi(p) of the sampled token p; carries the gradient."""
    anchor_token: Tensor
    """[B, T] log pi_anchor(p)."""
    token_in_topk: Tensor
    """[B, T] bool: whether p is one of the top-k ids."""


def sampling_topk_ids(sampling_logits: Tensor, k: int = DEFAULT_TOPK) -> Tensor:
    """The ids [B, T, k] of the k largest logits [B, T, V] of the sampling policy."""
    if not 1 <= k <= sampling_logits.shape[-1]:
        raise ValueError(f"k must be in [1, {sampling_logits.shape[-1]}], got {k}")
    return sampling_logits.detach().topk(k, dim=-1).indices


def _check_distinct(topk_ids: Tensor) -> None:
    ordered = topk_ids.sort(dim=-1).values
    if (ordered[..., 1:] == ordered[..., :-1]).any():
        raise ValueError("top-k ids repeat at some position; each id must appear once")


def gather_topk_logprobs(
    policy_logits: Tensor,
    anchor_logits: Tensor,
    sampled_tokens: Tensor,
    topk_ids: Tensor,
) -> TopKLogprobs:
    """Gather logprobs at the top-k ids and the sampled token from logits [B, T, V].

    Uses the fused log_softmax kernel (on CPU it beat logsumexp, which runs as
    several separate ops); the anchor is frozen, so its log_softmax is freed after the gather.
    """
    if policy_logits.shape != anchor_logits.shape:
        raise ValueError(
            f"policy logits {tuple(policy_logits.shape)} and anchor logits "
            f"{tuple(anchor_logits.shape)} differ"
        )
    if sampled_tokens.shape != policy_logits.shape[:-1]:
        raise ValueError(
            f"sampled tokens {tuple(sampled_tokens.shape)} must be [B, T] of logits "
            f"{tuple(policy_logits.shape)}"
        )
    if topk_ids.shape[:-1] != sampled_tokens.shape:
        raise ValueError(f"top-k ids {tuple(topk_ids.shape)} must be [B, T, k]")
    _check_distinct(topk_ids)
    anchor_logits = anchor_logits.detach()
    token_ids = sampled_tokens.long().unsqueeze(-1)
    topk_ids = topk_ids.long()
    # One gather per model for the k ids and the sampled token (one scatter in the backward).
    ids = torch.cat([topk_ids, token_ids], dim=-1)
    policy_gathered = torch.log_softmax(policy_logits, dim=-1).gather(-1, ids)
    with torch.no_grad():
        anchor_gathered = torch.log_softmax(anchor_logits, dim=-1).gather(-1, ids)
    return TopKLogprobs(
        policy_topk=policy_gathered[..., :-1],
        anchor_topk=anchor_gathered[..., :-1],
        policy_token=policy_gathered[..., -1],
        anchor_token=anchor_gathered[..., -1],
        token_in_topk=(topk_ids == token_ids).any(dim=-1),
    )


def topk_reverse_kl(
    gathered: TopKLogprobs, old_logprobs: Tensor, form: str = "corrected"
) -> Tensor:
    """EMA-PG's top-k reverse KL(pi || pi_anchor) per token [B, T].

    With q the sampling policy's top-k ids, p ~ pi_old the sampled token, l(j) = log pi(j) -
    log pi_anchor(j), `r = pi(p)/sg(pi(p))` (value 1, gradient grad log pi(p)) and
    `s = sg(pi(p)/pi_old(p))`:

        paper:     sum_{j in q} pi(j) l(j)      + s 1[p not in q] r sg(l(p))
        corrected: sum_{j in q} pi(j) sg(l(j))  + s 1[p not in q] r sg(l(p))

    Both have the same value, and its expectation over p ~ pi_old is the exact KL
    sum_j pi(j) l(j) (the tail term is an importance-weighted sample of the tail's share).

    Gradients. Exact: grad KL = sum_j grad pi(j) l(j) + sum_j pi(j) grad log pi(j), and the
    second sum is grad sum_j pi(j) = 0, so grad KL = sum_j grad pi(j) l(j). The tail term's
    expected gradient is sum_{p not in q} pi(p) grad log pi(p) l(p) = sum_{tail} grad pi(p) l(p).
    The paper head differentiates to sum_q grad pi(j) l(j) + grad(head mass), and head mass =
    1 - tail mass, so the paper form's expected gradient is grad KL - grad(tail mass): a bias
    equal to the gradient of the tail mass. The corrected head stops the gradient on l(j),
    which drops that extra term and leaves an expected gradient of exactly grad KL. With k = V
    the tail is empty and both forms are exact.
    """
    if form not in TOPK_FORMS:
        raise ValueError(f"unknown top-k KL form {form!r}; expected one of {TOPK_FORMS}")
    if old_logprobs.shape != gathered.policy_token.shape:
        raise ValueError(
            f"old logprobs {tuple(old_logprobs.shape)} must match tokens "
            f"{tuple(gathered.policy_token.shape)}"
        )
    head_log_ratio = gathered.policy_topk - gathered.anchor_topk.detach()
    if form == "corrected":
        head_log_ratio = head_log_ratio.detach()
    head = (gathered.policy_topk.exp() * head_log_ratio).sum(dim=-1)

    token_logprob = gathered.policy_token
    token_log_ratio = (token_logprob - gathered.anchor_token).detach()
    score_weight = torch.exp(token_logprob - token_logprob.detach())  # r: 1, grad log pi(p)
    importance = torch.exp(token_logprob.detach() - old_logprobs.detach())  # s
    tail_sample = importance * score_weight * token_log_ratio
    tail = torch.where(gathered.token_in_topk, torch.zeros_like(tail_sample), tail_sample)
    return head + tail


def topk_reverse_kl_from_logits(
    policy_logits: Tensor,
    anchor_logits: Tensor,
    sampled_tokens: Tensor,
    old_logprobs: Tensor,
    topk_ids: Tensor,
    form: str = "corrected",
) -> Tensor:
    """Top-k reverse KL [B, T] from full logits [B, T, V] of the policy and the anchor.

    `topk_ids` [B, T, k] are the sampling policy's top-k ids (from the engine's top logprobs,
    or `sampling_topk_ids`); `old_logprobs` [B, T] the sampling policy's logprob of each
    sampled token in `sampled_tokens` [B, T].
    """
    gathered = gather_topk_logprobs(policy_logits, anchor_logits, sampled_tokens, topk_ids)
    return topk_reverse_kl(gathered, old_logprobs, form=form)


def exact_reverse_kl(policy_logits: Tensor, anchor_logits: Tensor) -> Tensor:
    """The exact KL(pi || pi_anchor) [B, T] summed over the full vocabulary (reference value)."""
    policy_logprobs = torch.log_softmax(policy_logits, dim=-1)
    anchor_logprobs = torch.log_softmax(anchor_logits.detach(), dim=-1)
    return (policy_logprobs.exp() * (policy_logprobs - anchor_logprobs)).sum(dim=-1)
