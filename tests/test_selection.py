"""Selection strategies, the short-window policy, and the choice of the evaluated prompt."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from espl.evolution import selection
from espl.evolution.system_prompt import RatingPoint
from espl.evolution.selection import (
    LUCBSelection,
    SelectionStrategy,
    SoftmaxSelection,
    UCBSelection,
    UniformSelection,
    choose_eval_prompt,
    make_strategy,
    register_strategy,
    select_prompts,
    strategy_names,
)

WINDOW = [f"p{i}" for i in range(10)]  # oldest first; p9 is the newest


def rating(mu: float, sigma: float) -> RatingPoint:
    return RatingPoint(step=0, mu=mu, sigma=sigma)


# Conservative (mu-2s) best: p3 (30-2=28). Optimistic (mu+2s) best among the others: p5 then p7.
RATINGS = {prompt_id: rating(20.0, 2.0) for prompt_id in WINDOW}
RATINGS.update({"p3": rating(30.0, 1.0), "p5": rating(25.0, 8.0), "p7": rating(22.0, 7.0)})

ALL_STRATEGIES = ["uniform", "ucb", "lucb", "softmax"]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_registry_lists_and_builds_every_strategy() -> None:
    assert strategy_names() == sorted([*ALL_STRATEGIES, "newest"])
    assert isinstance(make_strategy("softmax", temperature=2.0), SoftmaxSelection)
    assert make_strategy("lucb", k=3.0).k == 3.0
    with pytest.raises(ValueError, match="unknown selection strategy"):
        make_strategy("best-of-n")
    with pytest.raises(ValueError, match="softmax"):
        make_strategy("softmax", temprature=2.0)


def test_newest_fills_every_slot_with_the_newest_prompt() -> None:
    strategy = make_strategy("newest")
    assert select_prompts(strategy, WINDOW, RATINGS, 3, rng()) == ["p9", "p9", "p9"]
    assert select_prompts(strategy, WINDOW, RATINGS, 3, rng(), short_window="fewer") == ["p9"]


def test_registering_a_strategy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selection, "_STRATEGIES", dict(selection._STRATEGIES))

    class OldestSelection:
        name = "oldest-test"

        def select(self, window, ratings, m, rng):  # type: ignore[no-untyped-def]
            return [window[-1], *window[: m - 1]]

    register_strategy("oldest-test", OldestSelection)
    strategy: SelectionStrategy = make_strategy("oldest-test")
    assert strategy.select(WINDOW, {}, 3, rng()) == ["p9", "p0", "p1"]
    with pytest.raises(ValueError, match="already registered"):
        register_strategy("oldest-test", OldestSelection)


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_contract_newest_first_distinct_and_seeded(name: str) -> None:
    strategy = make_strategy(name)
    picks = strategy.select(WINDOW, RATINGS, 3, rng(7))
    assert picks[0] == "p9"
    assert len(picks) == len(set(picks)) == 3
    assert set(picks) <= set(WINDOW)
    assert strategy.select(WINDOW, RATINGS, 3, rng(7)) == picks


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_small_windows_give_every_distinct_prompt(name: str) -> None:
    strategy = make_strategy(name)
    assert strategy.select(["p0"], RATINGS, 3, rng()) == ["p0"]
    assert sorted(strategy.select(["p0", "p1"], RATINGS, 3, rng())) == ["p0", "p1"]
    assert strategy.select(WINDOW, RATINGS, 1, rng()) == ["p9"]


@pytest.mark.parametrize("name", ALL_STRATEGIES)
def test_bad_calls_raise(name: str) -> None:
    strategy = make_strategy(name)
    with pytest.raises(ValueError):
        strategy.select([], RATINGS, 3, rng())
    with pytest.raises(ValueError):
        strategy.select(WINDOW, RATINGS, 0, rng())
    with pytest.raises(ValueError):
        strategy.select(["p1", "p1"], RATINGS, 2, rng())


@pytest.mark.parametrize("name", ["ucb", "lucb", "softmax"])
def test_rating_strategies_need_ratings(name: str) -> None:
    with pytest.raises(KeyError, match="p0"):
        make_strategy(name).select(WINDOW, {"p9": rating(25, 8)}, 3, rng())


def test_uniform_ignores_ratings_and_covers_the_window() -> None:
    strategy = UniformSelection()
    counts = Counter(i for seed in range(400) for i in strategy.select(WINDOW, {}, 3, rng(seed))[1:])
    assert set(counts) == set(WINDOW[:-1])
    assert max(counts.values()) < 2 * min(counts.values())


def test_ucb_takes_the_highest_optimistic_scores() -> None:
    assert UCBSelection().select(WINDOW, RATINGS, 3, rng()) == ["p9", "p5", "p7"]


def test_lucb_champion_is_the_best_conservative_score() -> None:
    strategy = LUCBSelection()
    assert strategy.champion(WINDOW, RATINGS, rng()) == "p3"
    assert strategy.select(WINDOW, RATINGS, 3, rng()) == ["p9", "p3", "p5"]
    assert strategy.select(WINDOW, RATINGS, 4, rng()) == ["p9", "p3", "p5", "p7"]


def test_lucb_gives_all_slots_to_challengers_when_the_newest_is_champion() -> None:
    ratings = dict(RATINGS, p9=rating(40.0, 1.0))
    assert LUCBSelection().select(WINDOW, ratings, 3, rng()) == ["p9", "p5", "p7"]


def test_ties_are_broken_at_random_but_reproducibly() -> None:
    flat = {prompt_id: rating(25.0, 8.0) for prompt_id in WINDOW}
    runs = {tuple(UCBSelection().select(WINDOW, flat, 3, rng(seed))) for seed in range(30)}
    assert len(runs) > 5
    assert UCBSelection().select(WINDOW, flat, 3, rng(3)) == UCBSelection().select(WINDOW, flat, 3, rng(3))


def test_softmax_prefers_high_optimistic_scores() -> None:
    strategy = SoftmaxSelection()
    counts = Counter(i for seed in range(300) for i in strategy.select(WINDOW, RATINGS, 2, rng(seed))[1:])
    # p5 (mu+2s = 41) beats p7 (36), which beats the plain prompts (24).
    assert counts["p5"] > counts["p7"] > counts["p0"]


def test_softmax_temperature_controls_greediness() -> None:
    greedy = SoftmaxSelection(temperature=0.01)
    assert all(greedy.select(WINDOW, RATINGS, 2, rng(s)) == ["p9", "p5"] for s in range(20))
    with pytest.raises(ValueError):
        SoftmaxSelection(temperature=0.0)


def test_short_window_repeats_to_fill_m_slots() -> None:
    uniform = UniformSelection()
    assert select_prompts(uniform, ["p0"], {}, 3, rng()) == ["p0", "p0", "p0"]
    assert select_prompts(uniform, ["p0", "p1"], {}, 3, rng()) == ["p1", "p0", "p1"]
    assert select_prompts(uniform, ["p0", "p1"], {}, 3, rng(), short_window="fewer") == ["p1", "p0"]
    assert len(select_prompts(uniform, WINDOW, {}, 3, rng())) == 3
    with pytest.raises(ValueError, match="short-window"):
        select_prompts(uniform, ["p0"], {}, 3, rng(), short_window="pad")  # type: ignore[arg-type]


def test_eval_prompt_rules() -> None:
    assert choose_eval_prompt(WINDOW, RATINGS) == "p9"
    assert choose_eval_prompt(WINDOW, RATINGS, rule="best") == "p3"
    tie = {"p0": rating(30.0, 1.0), "p1": rating(30.0, 1.0)}
    assert choose_eval_prompt(["p0", "p1", "p2"], tie, rule="best") == "p1"
    assert choose_eval_prompt(["p0", "p1"], {}, rule="best") == "p1"
    with pytest.raises(ValueError):
        choose_eval_prompt([], RATINGS)
    with pytest.raises(ValueError, match="unknown evaluation rule"):
        choose_eval_prompt(WINDOW, RATINGS, rule="oldest")  # type: ignore[arg-type]


ratings_strategy = st.tuples(st.floats(0.0, 50.0), st.floats(0.1, 10.0))


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(ALL_STRATEGIES),
    params=st.lists(ratings_strategy, min_size=1, max_size=12),
    m=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_strategy_keeps_the_contract(name: str, params: list[tuple[float, float]], m: int, seed: int) -> None:
    window = [f"q{i}" for i in range(len(params))]
    ratings = {prompt_id: rating(mu, sigma) for prompt_id, (mu, sigma) in zip(window, params)}
    strategy = make_strategy(name)
    picks = strategy.select(window, ratings, m, rng(seed))
    assert picks[0] == window[-1]
    assert len(picks) == len(set(picks)) == min(m, len(window))
    assert set(picks) <= set(window)
    assert picks == strategy.select(window, ratings, m, rng(seed))
    padded = select_prompts(strategy, window, ratings, m, rng(seed))
    assert len(padded) == m and set(padded) == set(picks)
