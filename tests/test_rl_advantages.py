"""Group advantages: hand-computed values for every mode, keep masks and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from espl.rl.advantages import ADVANTAGE_MODES, compute_advantages, group_indices

# Groups (prompt id, problem id), interleaved on purpose:
#   A = (0, "p1"): rewards 1, 0, 0, 1 -> mean 1/2
#   B = (0, "p2"): rewards 1, 1       -> mean 1, every advantage 0
#   C = (1, "p1"): rewards 0, 0, 1    -> mean 1/3
A, B, C = (0, "p1"), (0, "p2"), (1, "p1")
KEYS = [A, B, C, A, C, B, A, C, A]
REWARDS = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
THIRD = 1.0 / 3.0
CENTRED = [0.5, 0.0, -THIRD, -0.5, -THIRD, 0.0, -0.5, 2 * THIRD, 0.5]


def test_espl_centres_without_std_and_drops_flat_groups() -> None:
    result = compute_advantages(REWARDS, KEYS, mode="espl")
    torch.testing.assert_close(result.advantages, torch.tensor(CENTRED))
    assert result.keep.tolist() == [True, False, True, True, True, False, True, True, True]
    assert result.num_kept == 7
    assert result.num_groups == 3
    assert result.group_index.tolist() == [0, 1, 2, 0, 2, 1, 0, 2, 0]


def test_grpo_divides_by_unbiased_group_std_plus_eps() -> None:
    eps = 1e-6
    std_a = math.sqrt(4 * 0.25 / 3)  # squared deviations 1/4 each, n - 1 = 3
    std_c = math.sqrt((1 / 9 + 1 / 9 + 4 / 9) / 2)
    expected = [
        0.5 / (std_a + eps),
        0.0,
        -THIRD / (std_c + eps),
        -0.5 / (std_a + eps),
        -THIRD / (std_c + eps),
        0.0,
        -0.5 / (std_a + eps),
        2 * THIRD / (std_c + eps),
        0.5 / (std_a + eps),
    ]
    result = compute_advantages(torch.tensor(REWARDS, dtype=torch.float64), KEYS, mode="grpo")
    torch.testing.assert_close(result.advantages, torch.tensor(expected, dtype=torch.float64))
    assert result.advantages.dtype == torch.float64
    assert result.keep.all()
    assert abs(result.advantages[0].item() - 0.8660254) < 1e-5


def test_grpo_eps_keeps_flat_groups_finite() -> None:
    result = compute_advantages([2.0, 2.0, 2.0], ["g"] * 3, mode="grpo", eps=1e-4)
    assert torch.equal(result.advantages, torch.zeros(3))


def test_dr_grpo_centres_and_keeps_everything() -> None:
    result = compute_advantages(REWARDS, KEYS, mode="dr_grpo")
    torch.testing.assert_close(result.advantages, torch.tensor(CENTRED))
    assert result.keep.all()


def test_none_returns_raw_rewards() -> None:
    result = compute_advantages(REWARDS, KEYS, mode="none")
    torch.testing.assert_close(result.advantages, torch.tensor(REWARDS))
    assert result.keep.all()


def test_drop_zero_groups_can_be_overridden_both_ways() -> None:
    kept_all = compute_advantages(REWARDS, KEYS, mode="espl", drop_zero_groups=False)
    assert kept_all.keep.all()
    dropped = compute_advantages(REWARDS, KEYS, mode="grpo", drop_zero_groups=True)
    assert dropped.keep.tolist() == [True, False, True, True, True, False, True, True, True]


def test_dropped_groups_get_exact_zero_even_with_round_off() -> None:
    # 0.1 * 3 / 3 is not exactly 0.1 in float32, so r - mean is a tiny nonzero number.
    result = compute_advantages([0.1, 0.1, 0.1, 0.0, 1.0], ["x", "x", "x", "y", "y"])
    assert result.keep.tolist() == [False, False, False, True, True]
    assert torch.equal(result.advantages[:3], torch.zeros(3))
    torch.testing.assert_close(result.advantages[3:], torch.tensor([-0.5, 0.5]))


def test_zero_tol_treats_near_equal_rewards_as_flat() -> None:
    rewards = [0.5, 0.5 + 1e-4]
    assert compute_advantages(rewards, ["g", "g"], zero_tol=0.0).keep.all()
    assert not compute_advantages(rewards, ["g", "g"], zero_tol=1e-3).keep.any()


def test_singleton_group_is_zero_and_dropped_in_espl() -> None:
    espl = compute_advantages([1.0, 0.0, 1.0], ["solo", "pair", "pair"], mode="espl")
    assert espl.keep.tolist() == [False, True, True]
    grpo = compute_advantages([1.0, 0.0, 1.0], ["solo", "pair", "pair"], mode="grpo")
    assert grpo.advantages[0].item() == 0.0
    assert torch.isfinite(grpo.advantages).all()


def test_integer_tensor_keys_and_integer_rewards() -> None:
    result = compute_advantages(torch.tensor([1, 0, 1, 1]), torch.tensor([7, 7, 3, 3]), "espl")
    assert result.advantages.is_floating_point()
    torch.testing.assert_close(result.advantages, torch.tensor([0.5, -0.5, 0.0, 0.0]))
    assert result.keep.tolist() == [True, True, False, False]


def test_group_indices_number_keys_by_first_appearance() -> None:
    index, count = group_indices([("b", 1), ("a", 2), ("b", 1), ("c", 0)])
    assert index.tolist() == [0, 1, 0, 2]
    assert count == 3


@pytest.mark.parametrize(
    ("rewards", "keys", "mode", "message"),
    [
        ([1.0, 0.0], ["a"], "espl", "group keys"),
        ([1.0], ["a"], "ppo", "unknown advantage mode"),
        ([float("nan")], ["a"], "espl", "finite"),
        ([[1.0]], ["a"], "espl", "1-D"),
    ],
)
def test_bad_input_raises_clear_errors(rewards, keys, mode, message) -> None:
    with pytest.raises(ValueError, match=message):
        compute_advantages(rewards, keys, mode=mode)


def test_every_documented_mode_runs() -> None:
    assert set(ADVANTAGE_MODES) == {"espl", "grpo", "dr_grpo", "none"}
    for mode in ADVANTAGE_MODES:
        result = compute_advantages(REWARDS, KEYS, mode=mode)
        assert result.advantages.shape == (9,)
