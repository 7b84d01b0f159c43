"""Forward + backward time of EMA-PG's top-k KL against the exact full-vocabulary KL.

Both run on the same [B, T, V] logits. The top-k form gathers k + 1 logprobs per position
after one logsumexp; the exact form materialises a full log_softmax of policy and anchor.
"""

from __future__ import annotations

import pytest
import torch

from espl.rl.kl import exact_reverse_kl, sampling_topk_ids, topk_reverse_kl_from_logits

BATCH, LENGTH, VOCAB, TOP_K = 2, 128, 32_000, 32


@pytest.fixture(scope="module")
def logits() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    policy = torch.randn(BATCH, LENGTH, VOCAB, generator=generator)
    anchor = policy + 0.1 * torch.randn(BATCH, LENGTH, VOCAB, generator=generator)
    tokens = torch.distributions.Categorical(logits=policy).sample()
    old_logprobs = torch.log_softmax(policy, -1).gather(-1, tokens[..., None])[..., 0]
    return {
        "policy": policy,
        "anchor": anchor,
        "tokens": tokens,
        "old_logprobs": old_logprobs,
        "topk": sampling_topk_ids(policy, TOP_K),
    }


def test_topk_kl_forward_backward(benchmark, logits) -> None:
    def run() -> None:
        policy = logits["policy"].clone().requires_grad_()
        kl = topk_reverse_kl_from_logits(
            policy, logits["anchor"], logits["tokens"], logits["old_logprobs"], logits["topk"]
        )
        kl.mean().backward()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["shape"] = [BATCH, LENGTH, VOCAB, TOP_K]


def test_exact_kl_forward_backward(benchmark, logits) -> None:
    def run() -> None:
        policy = logits["policy"].clone().requires_grad_()
        exact_reverse_kl(policy, logits["anchor"]).mean().backward()

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["shape"] = [BATCH, LENGTH, VOCAB]
