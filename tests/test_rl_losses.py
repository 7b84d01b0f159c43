"""Policy losses and token aggregation: hand-computed values, gradients, clipping and masks."""

from __future__ import annotations

import math

import pytest
import torch

from espl.rl.aggregation import AGGREGATIONS, aggregate_tokens
from espl.rl.losses import (
    LossInputs,
    PolicyLoss,
    available_losses,
    make_loss,
    register_loss,
)

NAN, INF = float("nan"), float("inf")
F64 = torch.float64


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=F64)


def _inputs(ratios, advantages, mask=None, old=math.log(0.4), kl=None):
    """Leaf logprobs chosen so that exp(logprobs - old_logprobs) equals `ratios`."""
    ratio_tensor = torch.tensor(ratios, dtype=torch.float64)
    old_logprobs = torch.full_like(ratio_tensor, old)
    logprobs = (old_logprobs + ratio_tensor.log()).requires_grad_()
    mask_tensor = torch.ones_like(ratio_tensor, dtype=torch.bool) if mask is None else mask
    return LossInputs(
        logprobs=logprobs,
        old_logprobs=old_logprobs,
        advantages=torch.tensor(advantages, dtype=torch.float64),
        mask=mask_tensor,
        kl=kl,
    )


def _grad(loss, inputs: LossInputs) -> torch.Tensor:
    (grad,) = torch.autograd.grad(loss, inputs.logprobs)
    return grad


# ---------------------------------------------------------------- aggregation

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0, NAN], [4.0, 5.0, INF, -INF], [7.0, 7.0, 7.0, 7.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token_sum", 15.0),  # 6 + 9
        ("seq_mean_token_sum", 7.5),  # (6 + 9) / 2 non-empty sequences
        ("token_mean", 3.0),  # 15 / 5 tokens
        ("seq_mean_token_mean", 3.25),  # (6/3 + 9/2) / 2
        ("seq_mean_token_sum_norm", 1.875),  # (6/4 + 9/4) / 2 with T = 4
    ],
)
def test_aggregations_hand_computed_ignoring_masked_garbage(mode: str, expected: float) -> None:
    assert aggregate_tokens(PER_TOKEN, MASK, mode).item() == pytest.approx(expected)


def test_dr_grpo_aggregation_uses_the_given_constant() -> None:
    value = aggregate_tokens(PER_TOKEN, MASK, "seq_mean_token_sum_norm", max_tokens=10)
    assert value.item() == pytest.approx((0.6 + 0.9) / 2)


def test_aggregation_rejects_unknown_modes_and_bad_shapes() -> None:
    assert len(AGGREGATIONS) == 5
    with pytest.raises(ValueError, match="unknown token aggregation"):
        aggregate_tokens(PER_TOKEN, MASK, "sum")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        aggregate_tokens(PER_TOKEN[0], MASK[0], "token_sum")


def test_all_masked_batch_gives_zero_not_nan() -> None:
    for mode in AGGREGATIONS:
        value = aggregate_tokens(torch.ones(2, 2), torch.zeros(2, 2, dtype=torch.bool), mode)
        assert value.item() == 0.0


# ---------------------------------------------------------------- reinforce


def test_reinforce_is_token_sum_of_minus_advantage_times_ratio() -> None:
    inputs = _inputs([[1.0, 1.0], [2.0, 0.5]], [2.0, -1.0])
    out = make_loss("reinforce")(inputs)
    assert out.loss.item() == pytest.approx(-2 - 2 + 2 + 0.5)
    # d/dlogp of -A exp(logp - old) is -A * ratio
    torch.testing.assert_close(_grad(out.loss, inputs), _t([[-2.0, -2.0], [2.0, 0.5]]))
    assert out.stats["ratio_max"].item() == pytest.approx(2.0)
    assert out.stats["ratio_min"].item() == pytest.approx(0.5)


def test_reinforce_bounds_the_ratio_against_engine_logprobs() -> None:
    """Truncated importance sampling: a token whose ratio passed `ratio_cap` (2 by default)
    counts with weight `ratio_cap`, value and gradient, instead of the unbounded ratio."""
    inputs = _inputs([[1.0, 150.0], [0.001, 3.0]], [2.0, -1.0])
    out = make_loss("reinforce")(inputs)
    assert out.loss.item() == pytest.approx(-2 - 2 * 2 + 0.001 + 2)
    torch.testing.assert_close(_grad(out.loss, inputs), _t([[-2.0, -4.0], [0.001, 2.0]]))
    assert out.stats["ratio_max"].item() == pytest.approx(150.0)  # the stats still show the raw ratio
    looser = make_loss("reinforce", ratio_cap=200.0)(inputs)
    assert looser.loss.item() == pytest.approx(-2 - 300 + 0.001 + 3)
    unbounded = make_loss("reinforce", ratio_cap=math.inf)(inputs)
    assert unbounded.loss.item() == pytest.approx(looser.loss.item())
    with pytest.raises(ValueError, match="ratio_cap"):
        make_loss("reinforce", ratio_cap=1.0)


def test_reinforce_cap_leaves_near_one_ratios_bit_for_bit() -> None:
    generator = torch.Generator().manual_seed(3)
    old = -torch.rand(4, 6, generator=generator)
    logprobs = (old + 1e-5 * torch.randn(4, 6, generator=generator)).requires_grad_()
    advantages = torch.tensor([0.5, -1.0, 2.0, 0.0])
    mask = torch.rand(4, 6, generator=generator) > 0.3
    inputs = LossInputs(logprobs, old, advantages, mask)
    capped = make_loss("reinforce")(inputs)
    unbounded = make_loss("reinforce", ratio_cap=math.inf)(inputs)
    assert torch.equal(capped.loss, unbounded.loss)
    assert torch.equal(_grad(capped.loss, inputs), _grad(unbounded.loss, inputs))


def test_reinforce_on_policy_gradient_equals_plain_reinforce() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = (-torch.rand(3, 5, generator=generator, dtype=torch.float64)).requires_grad_()
    advantages = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    mask = torch.rand(3, 5, generator=generator) > 0.3
    inputs = LossInputs(logprobs, logprobs.detach(), advantages, mask)
    out = make_loss("reinforce")(inputs)
    plain = -(advantages[:, None] * logprobs * mask).sum()
    (plain_grad,) = torch.autograd.grad(plain, logprobs)
    torch.testing.assert_close(_grad(out.loss, inputs), plain_grad)
    assert out.stats["approx_kl"].item() == 0.0


# ---------------------------------------------------------------- grpo (PPO-clip)

RATIOS = [[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]
ADVANTAGES = [1.0, -1.0]
# A = +1: 0.5 unclipped, 1.0, 1.5 clipped high to 1.28.  A = -1: 0.5 clipped low to 0.8,
# 1.0, 1.5 unclipped.  Per-token losses -min(r A, clip(r) A):
PPO_PER_TOKEN = [[-0.5, -1.0, -1.28], [0.8, 1.0, 1.5]]


def test_grpo_clips_both_sides_hand_computed() -> None:
    inputs = _inputs(RATIOS, ADVANTAGES)
    out = make_loss("grpo")(inputs)
    expected = (sum(PPO_PER_TOKEN[0]) / 3 + sum(PPO_PER_TOKEN[1]) / 3) / 2
    assert out.loss.item() == pytest.approx(expected)
    # Clipped tokens get no gradient; others -A * ratio / 6 (each token weighs 1/3 * 1/2).
    expected_grad = torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 1.5]], dtype=torch.float64) / 6
    torch.testing.assert_close(_grad(out.loss, inputs), expected_grad)
    assert out.stats["clip_fraction"].item() == pytest.approx(2 / 6)
    assert out.stats["clip_high_fraction"].item() == pytest.approx(1 / 6)
    assert out.stats["clip_low_fraction"].item() == pytest.approx(1 / 6)
    assert out.stats["ratio_mean"].item() == pytest.approx(1.0)
    approx_kl = 2 * ((0.5 - 1 - math.log(0.5)) + (1.5 - 1 - math.log(1.5))) / 6
    assert out.stats["approx_kl"].item() == pytest.approx(approx_kl)


def test_grpo_clip_range_is_configurable() -> None:
    inputs = _inputs(RATIOS, ADVANTAGES)
    out = make_loss("grpo", clip_low=0.6, clip_high=0.6, aggregation="token_sum")(inputs)
    # Nothing leaves [0.4, 1.6] now, so the loss is plain -r A summed.
    assert out.loss.item() == pytest.approx(-3.0 + 3.0)
    assert out.stats["clip_fraction"].item() == 0.0


def test_masked_positions_with_garbage_change_nothing() -> None:
    clean = _inputs(RATIOS, ADVANTAGES)
    logprobs = torch.cat([clean.logprobs.detach(), _t([[NAN], [INF]])], 1)
    logprobs.requires_grad_()
    padded = LossInputs(
        logprobs=logprobs,
        old_logprobs=torch.cat([clean.old_logprobs, _t([[-INF], [NAN]])], 1),
        advantages=clean.advantages,
        mask=torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool),
    )
    for name in available_losses():
        kl = torch.zeros(2, 4, dtype=torch.float64)
        # A fixed max_tokens, else dr_grpo's divisor follows the padded length by design.
        loss_fn = make_loss(name, max_tokens=4)
        reference = loss_fn(LossInputs(**{**clean.__dict__, "kl": kl[:, :3]}))
        out = loss_fn(LossInputs(**{**padded.__dict__, "kl": kl}))
        assert out.loss.item() == pytest.approx(reference.loss.item()), name
        grad = _grad(out.loss, padded)
        assert torch.isfinite(grad).all(), name
        assert torch.equal(grad[:, 3], torch.zeros(2, dtype=torch.float64)), name
        assert out.stats["num_tokens"].item() == 6


def test_per_token_advantages_are_accepted() -> None:
    inputs = _inputs([[1.0, 1.0]], [[3.0, -1.0]])
    assert make_loss("reinforce")(inputs).loss.item() == pytest.approx(-2.0)


# ---------------------------------------------------------------- dr_grpo


def test_dr_grpo_sums_tokens_over_constant_max_tokens() -> None:
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    inputs = _inputs(RATIOS, ADVANTAGES, mask=mask)
    out = make_loss("dr_grpo", max_tokens=5)(inputs)
    expected = (sum(PPO_PER_TOKEN[0]) / 5 + (0.8 + 1.0) / 5) / 2
    assert out.loss.item() == pytest.approx(expected)
    expected_grad = torch.tensor([[-0.5, -1.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64) / 10
    torch.testing.assert_close(_grad(out.loss, inputs), expected_grad)


# ---------------------------------------------------------------- cispo


def test_cispo_weights_logprobs_by_detached_clipped_ratio() -> None:
    inputs = _inputs([[0.5, 5.0], [1.0, 1.0]], [1.0, -2.0], old=math.log(0.1))
    out = make_loss("cispo")(inputs)
    logp = [[math.log(0.05), math.log(0.5)], [math.log(0.1), math.log(0.1)]]
    weights = [[0.5, 4.0], [1.0, 1.0]]  # ratio 5 is clipped to 4
    advantages = [1.0, -2.0]
    per_token = [[-weights[b][t] * advantages[b] * logp[b][t] for t in range(2)] for b in range(2)]
    # Summed over tokens, as Tinker's `cispo` loss computes it (`-(w * logp * A).sum()`).
    assert out.loss.item() == pytest.approx(sum(map(sum, per_token)))
    # The weight is detached: d/dlogp = -w A, including the clipped token.
    expected_grad = torch.tensor([[-0.5, -4.0], [2.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(_grad(out.loss, inputs), expected_grad)
    assert out.stats["clip_fraction"].item() == pytest.approx(1 / 4)
    assert out.stats["clip_high_fraction"].item() == pytest.approx(1 / 4)


def test_cispo_clip_bounds_are_configurable() -> None:
    inputs = _inputs([[0.5, 5.0]], [1.0])
    out = make_loss("cispo", ratio_min=0.8, ratio_max=1.2, aggregation="token_sum")(inputs)
    torch.testing.assert_close(_grad(out.loss, inputs), _t([[-0.8, -1.2]]))
    assert out.stats["clip_low_fraction"].item() == pytest.approx(0.5)


# ---------------------------------------------------------------- ema_pg


def test_ema_pg_adds_kl_coef_times_aggregated_kl() -> None:
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64, requires_grad=True)
    inputs = _inputs(RATIOS, ADVANTAGES, kl=kl)
    loss_fn = make_loss("ema_pg", kl_coef=0.5)
    out = loss_fn(inputs)
    pg = (sum(PPO_PER_TOKEN[0]) + sum(PPO_PER_TOKEN[1])) / 6
    assert out.loss.item() == pytest.approx(pg + 0.5 * 2.1 / 6)
    assert out.stats["pg_loss"].item() == pytest.approx(pg)
    assert out.stats["kl_loss"].item() == pytest.approx(2.1 / 6)
    (kl_grad,) = torch.autograd.grad(out.loss, kl)
    torch.testing.assert_close(kl_grad, torch.full((2, 3), 0.5 / 6, dtype=torch.float64))


def test_ema_pg_defaults_and_requires_kl() -> None:
    loss_fn = make_loss("ema_pg")
    assert (loss_fn.kl_coef, loss_fn.clip_low, loss_fn.clip_high) == (0.001, 0.2, 0.28)
    with pytest.raises(ValueError, match="needs `kl`"):
        loss_fn(_inputs(RATIOS, ADVANTAGES))
    with pytest.raises(ValueError, match="needs `kl`"):
        make_loss("grpo", kl_coef=0.1)(_inputs(RATIOS, ADVANTAGES))


# ---------------------------------------------------------------- registry


def test_registry_names_defaults_and_protocol() -> None:
    expected = {
        "reinforce": ("token_sum", "espl"),
        "grpo": ("seq_mean_token_mean", "grpo"),
        "dr_grpo": ("seq_mean_token_sum_norm", "dr_grpo"),
        "cispo": ("token_sum", "espl"),
        "ema_pg": ("token_mean", "grpo"),
    }
    assert set(available_losses()) == set(expected)
    for name, (aggregation, advantage_mode) in expected.items():
        loss_fn = make_loss(name)
        assert isinstance(loss_fn, PolicyLoss)
        assert loss_fn.name == name
        assert loss_fn.aggregation == aggregation
        assert loss_fn.default_advantage_mode == advantage_mode
        out = loss_fn(_inputs(RATIOS, ADVANTAGES, kl=torch.zeros(2, 3, dtype=torch.float64)))
        assert out.loss.dim() == 0 and out.loss.requires_grad
        assert all(not value.requires_grad for value in out.stats.values())


def test_registry_rejects_bad_names_and_options() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("ppo2")
    with pytest.raises(ValueError, match="no options"):
        make_loss("reinforce", clip_low=0.1)
    with pytest.raises(ValueError, match="unknown token aggregation"):
        make_loss("grpo", aggregation="mean")
    with pytest.raises(ValueError, match="ratio_min"):
        make_loss("cispo", ratio_min=5.0)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("grpo", advantage_mode="grpo")(type("Dup", (), {}))


def test_shape_errors_are_clear() -> None:
    good = _inputs(RATIOS, ADVANTAGES)
    with pytest.raises(ValueError, match="same"):
        short_old = good.old_logprobs[:, :2]
        make_loss("grpo")(LossInputs(good.logprobs, short_old, good.advantages, good.mask))
    with pytest.raises(ValueError, match="advantages"):
        make_loss("grpo")(LossInputs(good.logprobs, good.old_logprobs, torch.zeros(3), good.mask))
