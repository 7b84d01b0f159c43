"""K3, EMA-PG's top-k reverse KL (value, bias of each form's gradient) and the EMA update."""

from __future__ import annotations

import math

import pytest
import torch

from espl.rl.ema import ema_update_
from espl.rl.kl import (
    exact_reverse_kl,
    gather_topk_logprobs,
    k3_kl,
    sampling_topk_ids,
    topk_reverse_kl,
    topk_reverse_kl_from_logits,
)

DTYPE = torch.float64
VOCAB = 8


def _logits(seed: int, scale: float = 1.5) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(VOCAB, generator=generator, dtype=DTYPE) * scale


# ---------------------------------------------------------------- K3


def test_k3_hand_computed_values_and_gradient() -> None:
    logprobs = torch.tensor([[math.log(0.5), math.log(0.3), math.log(0.1)]], requires_grad=True)
    ref_logprobs = torch.tensor([[math.log(0.25), math.log(0.3), math.log(0.4)]])
    # d = log ref - log pi: log 0.5, 0, log 4 -> exp(d) - d - 1
    expected = torch.tensor([[0.5 + math.log(2) - 1, 0.0, 4 - math.log(4) - 1]])
    value = k3_kl(logprobs, ref_logprobs)
    torch.testing.assert_close(value, expected)
    value.sum().backward()
    # d(k3)/d(log pi) = 1 - exp(d)
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.5, 0.0, -3.0]]))


def test_k3_stays_finite_when_the_reference_rules_a_token_out() -> None:
    value = k3_kl(torch.tensor([[-0.1]]), torch.tensor([[-float("inf")]]))
    torch.testing.assert_close(value, torch.tensor([[math.exp(-20.0) + 20.0 - 1.0]]))


def test_k3_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        k3_kl(torch.zeros(2, 3), torch.zeros(3, 2))


# ---------------------------------------------------------------- top-k KL helpers


def _all_samples(
    policy: torch.Tensor, anchor: torch.Tensor, sampling: torch.Tensor, k: int, form: str
) -> torch.Tensor:
    """Top-k KL for every possible sampled token p (batch of V), at one position."""
    policy_batch = policy.expand(VOCAB, 1, VOCAB)
    anchor_batch = anchor.expand(VOCAB, 1, VOCAB)
    tokens = torch.arange(VOCAB).view(VOCAB, 1)
    old_logprobs = torch.log_softmax(sampling, dim=-1)[tokens]
    topk = sampling_topk_ids(sampling.expand(VOCAB, 1, VOCAB), k)
    return topk_reverse_kl_from_logits(
        policy_batch, anchor_batch, tokens, old_logprobs, topk, form=form
    ).squeeze(1)


def _expected_value_and_grad(policy_leaf, anchor, sampling, k, form):
    """Exact expectation over p ~ pi_old of the estimate and of its gradient w.r.t. logits."""
    weights = torch.softmax(sampling, dim=-1)
    expected = (weights * _all_samples(policy_leaf, anchor, sampling, k, form)).sum()
    (grad,) = torch.autograd.grad(expected, policy_leaf)
    return expected.detach(), grad


def _exact_value_and_grad(policy_leaf, anchor):
    exact = exact_reverse_kl(policy_leaf.view(1, 1, VOCAB), anchor.view(1, 1, VOCAB)).sum()
    (grad,) = torch.autograd.grad(exact, policy_leaf)
    return exact.detach(), grad


# ---------------------------------------------------------------- top-k KL: value


@pytest.mark.parametrize("form", ["corrected", "paper"])
def test_full_vocabulary_top_k_is_the_exact_kl_for_every_sample(form: str) -> None:
    policy = _logits(0).requires_grad_()
    anchor, sampling = _logits(1), _logits(2)
    exact, exact_grad = _exact_value_and_grad(policy, anchor)
    per_sample = _all_samples(policy, anchor, sampling, VOCAB, form)
    torch.testing.assert_close(per_sample.detach(), exact.expand(VOCAB))
    for token in range(VOCAB):
        (grad,) = torch.autograd.grad(per_sample[token], policy, retain_graph=True)
        torch.testing.assert_close(grad, exact_grad)


@pytest.mark.parametrize("form", ["corrected", "paper"])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_expected_value_over_sampling_policy_is_the_exact_kl(form: str, k: int) -> None:
    # pi_old differs from pi: the weight s = pi(p)/pi_old(p) corrects for it.
    policy = _logits(3).requires_grad_()
    anchor, sampling = _logits(4), _logits(5)
    expected, _ = _expected_value_and_grad(policy, anchor, sampling, k, form)
    exact, _ = _exact_value_and_grad(policy, anchor)
    torch.testing.assert_close(expected, exact)


def test_monte_carlo_mean_with_on_policy_samples_matches_the_exact_kl() -> None:
    policy, anchor = _logits(6), _logits(7)
    samples = 200_000
    generator = torch.Generator().manual_seed(8)
    tokens = torch.multinomial(torch.softmax(policy, -1), samples, True, generator=generator)
    tokens = tokens.view(samples, 1)
    old_logprobs = torch.log_softmax(policy, -1)[tokens]
    topk = sampling_topk_ids(policy.expand(samples, 1, VOCAB), 2)
    policy_batch, anchor_batch = policy.expand(samples, 1, VOCAB), anchor.expand(samples, 1, VOCAB)
    estimates = topk_reverse_kl_from_logits(policy_batch, anchor_batch, tokens, old_logprobs, topk)
    exact = exact_reverse_kl(policy.view(1, 1, VOCAB), anchor.view(1, 1, VOCAB)).item()
    standard_error = estimates.std().item() / math.sqrt(samples)
    assert estimates.std().item() > 0  # the tail really is sampled
    assert standard_error < 0.02 * exact
    assert abs(estimates.mean().item() - exact) < 5 * standard_error


# ---------------------------------------------------------------- top-k KL: gradient bias


@pytest.mark.parametrize("k", [1, 3, 5])
def test_corrected_form_has_the_exact_expected_gradient(k: int) -> None:
    policy = _logits(9).requires_grad_()
    anchor, sampling = _logits(10), _logits(11)
    _, expected_grad = _expected_value_and_grad(policy, anchor, sampling, k, "corrected")
    _, exact_grad = _exact_value_and_grad(policy, anchor)
    torch.testing.assert_close(expected_grad, exact_grad)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_paper_form_gradient_is_biased_by_the_tail_mass_gradient(k: int) -> None:
    policy = _logits(9).requires_grad_()
    anchor, sampling = _logits(10), _logits(11)
    _, paper_grad = _expected_value_and_grad(policy, anchor, sampling, k, "paper")
    _, exact_grad = _exact_value_and_grad(policy, anchor)
    in_head = torch.zeros(VOCAB, dtype=torch.bool)
    in_head[sampling.topk(k).indices] = True
    tail_mass = torch.softmax(policy, -1)[~in_head].sum()
    (tail_mass_grad,) = torch.autograd.grad(tail_mass, policy)
    assert tail_mass_grad.abs().max() > 1e-3  # the bias is real, not round-off
    assert not torch.allclose(paper_grad, exact_grad)
    torch.testing.assert_close(paper_grad, exact_grad - tail_mass_grad)


# ---------------------------------------------------------------- top-k KL: API


def test_gathered_logprobs_match_log_softmax_on_a_batch() -> None:
    generator = torch.Generator().manual_seed(12)
    policy = torch.randn(2, 3, VOCAB, generator=generator, dtype=DTYPE)
    anchor = torch.randn(2, 3, VOCAB, generator=generator, dtype=DTYPE)
    sampling = torch.randn(2, 3, VOCAB, generator=generator, dtype=DTYPE)
    topk = sampling_topk_ids(sampling, 3)
    tokens = torch.tensor([[topk[0, 0, 1].item(), 0, 1], [2, 3, topk[1, 2, 0].item()]])
    gathered = gather_topk_logprobs(policy, anchor, tokens, topk)
    log_policy = torch.log_softmax(policy, -1)
    torch.testing.assert_close(gathered.policy_topk, log_policy.gather(-1, topk))
    torch.testing.assert_close(
        gathered.anchor_token, torch.log_softmax(anchor, -1).gather(-1, tokens[..., None])[..., 0]
    )
    expected_in = (topk == tokens[..., None]).any(-1)
    assert torch.equal(gathered.token_in_topk, expected_in)
    assert gathered.token_in_topk[0, 0] and gathered.token_in_topk[1, 2]


def test_sampled_token_inside_top_k_contributes_no_tail_term() -> None:
    policy, anchor = _logits(13).view(1, 1, VOCAB), _logits(14).view(1, 1, VOCAB)
    topk = sampling_topk_ids(policy, 3)
    head_only = topk_reverse_kl_from_logits(policy, anchor, topk[..., 0], torch.zeros(1, 1), topk)
    log_policy, log_anchor = torch.log_softmax(policy, -1), torch.log_softmax(anchor, -1)
    manual = (log_policy.exp() * (log_policy - log_anchor)).gather(-1, topk).sum(-1)
    torch.testing.assert_close(head_only, manual)


def test_anchor_receives_no_gradient() -> None:
    policy = _logits(15).view(1, 1, VOCAB).clone().requires_grad_()
    anchor = _logits(16).view(1, 1, VOCAB).clone().requires_grad_()
    topk = sampling_topk_ids(policy, 2)
    tail_token = policy.detach().argmin(-1)
    kl = topk_reverse_kl_from_logits(policy, anchor, tail_token, torch.full((1, 1), -3.0), topk)
    kl.sum().backward()
    assert anchor.grad is None
    assert policy.grad is not None and policy.grad.abs().sum() > 0


def test_bad_top_k_input_raises() -> None:
    logits = torch.zeros(1, 2, VOCAB)
    tokens = torch.zeros(1, 2, dtype=torch.long)
    repeated = torch.tensor([[[0, 0], [1, 2]]])
    with pytest.raises(ValueError, match="repeat"):
        gather_topk_logprobs(logits, logits, tokens, repeated)
    with pytest.raises(ValueError, match="k must be"):
        sampling_topk_ids(logits, VOCAB + 1)
    with pytest.raises(ValueError, match="form"):
        topk_reverse_kl(
            gather_topk_logprobs(logits, logits, tokens, sampling_topk_ids(logits, 2)),
            torch.zeros(1, 2),
            form="exact",
        )


# ---------------------------------------------------------------- EMA update


def test_ema_update_in_place_hand_computed() -> None:
    anchor = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0]])}
    policy = {"a": torch.tensor([3.0, 4.0]), "b": torch.tensor([[10.0]])}
    storage = anchor["a"].data_ptr()
    ema_update_(anchor, policy, eta=0.9)
    torch.testing.assert_close(anchor["a"], torch.tensor([1.2, 2.2]))
    torch.testing.assert_close(anchor["b"], torch.tensor([[1.0]]))
    assert anchor["a"].data_ptr() == storage
    torch.testing.assert_close(policy["a"], torch.tensor([3.0, 4.0]))


def test_ema_update_extremes_dtype_and_parameters() -> None:
    anchor = {"w": torch.nn.Parameter(torch.zeros(3))}
    policy = {"w": torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16))}
    ema_update_(anchor, policy, eta=1.0)
    assert torch.equal(anchor["w"].detach(), torch.zeros(3))
    ema_update_(anchor, policy, eta=0.0)
    assert torch.equal(anchor["w"].detach(), torch.tensor([1.0, 2.0, 3.0]))
    assert anchor["w"].dtype == torch.float32
    assert anchor["w"].grad_fn is None


def test_ema_update_rejects_mismatches() -> None:
    with pytest.raises(KeyError, match="names differ"):
        ema_update_({"a": torch.zeros(1)}, {"b": torch.zeros(1)}, 0.9)
    with pytest.raises(ValueError, match="shape"):
        ema_update_({"a": torch.zeros(1)}, {"a": torch.zeros(2)}, 0.9)
    with pytest.raises(ValueError, match="eta"):
        ema_update_({"a": torch.zeros(1)}, {"a": torch.zeros(1)}, 1.5)
