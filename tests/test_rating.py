"""TrueSkill matches, the tie rule, duplicate collapse, and child ratings."""

from __future__ import annotations

import math

import pytest
import trueskill
from hypothesis import given
from hypothesis import strategies as st

from espl.evolution.system_prompt import RatingPoint
from espl.evolution.rating import (
    RatingSystem,
    TrueSkillSettings,
    collapse_duplicates,
    conservative_score,
    optimistic_score,
    tied_ranks,
)


@pytest.fixture
def system() -> RatingSystem:
    return RatingSystem()


def fresh_ratings(system: RatingSystem, *ids: str) -> dict[str, trueskill.Rating]:
    return {prompt_id: system.fresh() for prompt_id in ids}


def rounded(rating: trueskill.Rating) -> tuple[float, float]:
    return round(rating.mu, 3), round(rating.sigma, 3)


def test_paper_settings_are_the_defaults(system: RatingSystem) -> None:
    env = system.env
    assert (env.mu, env.sigma, env.beta, env.tau, env.draw_probability) == pytest.approx(
        (25.0, 25 / 3, 25 / 6, 25 / 300, 0.1)
    )
    assert env is not trueskill.global_env()


def test_three_fresh_prompts_ranked_strictly_match_the_paper(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a", "b", "c")
    outcome = system.play([("a", 0.9), ("b", 0.5), ("c", 0.1)], ratings)
    assert outcome.played
    assert outcome.ranks == {"a": 0, "b": 1, "c": 2}
    assert rounded(outcome.after["a"]) == (31.675, 6.656)
    assert rounded(outcome.after["b"]) == (25.000, 6.208)
    assert rounded(outcome.after["c"]) == (18.325, 6.656)


def test_result_order_does_not_matter_for_a_strict_ranking(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a", "b", "c")
    outcome = system.play({"c": 0.1, "a": 0.9, "b": 0.5}, ratings)
    assert rounded(outcome.after["a"]) == (31.675, 6.656)
    assert rounded(outcome.after["c"]) == (18.325, 6.656)


def test_dedicated_environment_ignores_global_settings(system: RatingSystem) -> None:
    saved = trueskill.global_env()
    try:
        trueskill.setup(mu=0.0, sigma=1.0, beta=0.5, tau=0.0, draw_probability=0.5)
        fresh = RatingSystem()
        outcome = fresh.play([("a", 1.0), ("b", 0.0)], fresh_ratings(fresh, "a", "b"))
        assert fresh.fresh().mu == 25.0
        assert outcome.after["a"].mu > 25.0
    finally:
        trueskill.setup(
            mu=saved.mu, sigma=saved.sigma, beta=saved.beta, tau=saved.tau,
            draw_probability=saved.draw_probability, backend=saved.backend,
        )


def test_ranks_strict_order() -> None:
    assert tied_ranks([0.1, 0.9, 0.5]) == [2, 0, 1]


def test_scores_within_tolerance_tie() -> None:
    assert tied_ranks([0.50, 0.505, 0.30]) == [0, 0, 1]


def test_gap_of_exactly_the_tolerance_ties_despite_float_error() -> None:
    assert 0.51 - 0.50 > 0.01  # the float error the rule must absorb
    assert tied_ranks([0.51, 0.50]) == [0, 0]
    assert tied_ranks([0.52, 0.50]) == [0, 1]


def test_ties_chain_through_adjacent_scores() -> None:
    # 0.512 and 0.500 are 0.012 apart, yet both tie with 0.506 and so with each other.
    assert tied_ranks([0.500, 0.506, 0.512]) == [0, 0, 0]
    assert tied_ranks([0.500, 0.512]) == [1, 0]


def test_three_way_near_tie_is_one_draw(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a", "b", "c")
    outcome = system.play([("a", 0.600), ("b", 0.595), ("c", 0.592)], ratings)
    assert set(outcome.ranks.values()) == {0}
    for rating in outcome.after.values():
        assert rating.mu == pytest.approx(25.0, abs=1e-6)
        assert rating.sigma < ratings["a"].sigma  # a draw is still information


def test_partial_tie_puts_the_tied_pair_between(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a", "b", "c")
    outcome = system.play([("a", 0.8), ("b", 0.805), ("c", 0.2)], ratings)
    assert outcome.ranks == {"a": 0, "b": 0, "c": 1}
    assert outcome.after["a"].mu == pytest.approx(outcome.after["b"].mu, abs=0.01)
    assert outcome.after["a"].mu > 25.0 > outcome.after["c"].mu


def test_duplicates_collapse_to_their_mean() -> None:
    assert collapse_duplicates([("a", 0.2), ("b", 0.5), ("a", 0.6)]) == pytest.approx({"a": 0.4, "b": 0.5})
    assert list(collapse_duplicates([("b", 1.0), ("a", 0.0), ("b", 0.0)])) == ["b", "a"]


def test_duplicate_selection_plays_as_one_player(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a", "b")
    outcome = system.play([("a", 0.9), ("b", 0.1), ("a", 0.7)], ratings)
    assert set(outcome.after) == {"a", "b"}
    two_player = system.play([("a", 0.8), ("b", 0.1)], ratings)
    assert rounded(outcome.after["a"]) == rounded(two_player.after["a"])
    assert rounded(outcome.after["b"]) == rounded(two_player.after["b"])


def test_single_distinct_player_leaves_ratings_unchanged(system: RatingSystem) -> None:
    ratings = fresh_ratings(system, "a")
    outcome = system.play([("a", 0.9), ("a", 0.1), ("a", 0.5)], ratings)
    assert not outcome.played
    assert outcome.after["a"] == ratings["a"]
    assert outcome.scores == pytest.approx({"a": 0.5})


def test_missing_rating_and_nan_score_are_errors(system: RatingSystem) -> None:
    with pytest.raises(KeyError, match="'b'"):
        system.play([("a", 1.0), ("b", 0.0)], fresh_ratings(system, "a"))
    with pytest.raises(ValueError, match="NaN"):
        system.play([("a", float("nan")), ("b", 0.0)], fresh_ratings(system, "a", "b"))


def test_ratings_accept_any_mu_sigma_object(system: RatingSystem) -> None:
    points = {"a": RatingPoint(0, 30.0, 4.0), "b": RatingPoint(0, 20.0, 4.0)}
    outcome = system.play([("a", 0.1), ("b", 0.9)], points)
    assert outcome.after["a"].mu < 30.0 and outcome.after["b"].mu > 20.0


def test_mutation_child_keeps_mu_and_widens_sigma(system: RatingSystem) -> None:
    child = system.mutation_child(RatingPoint(3, 28.0, 3.0))
    assert child.mu == pytest.approx(28.0)
    assert child.sigma == pytest.approx(math.sqrt(10.0))


def test_crossover_child_is_precision_weighted(system: RatingSystem) -> None:
    # Precisions 1/4 and 1/1: mu = (30/4 + 20/1) / (1/4 + 1) = 27.5 / 1.25 = 22; var = 1/1.25 + 1.
    child = system.crossover_child([RatingPoint(0, 30.0, 2.0), RatingPoint(0, 20.0, 1.0)])
    assert child.mu == pytest.approx(22.0)
    assert child.sigma == pytest.approx(math.sqrt(1.8))


def test_crossover_of_equal_parents_keeps_their_mean(system: RatingSystem) -> None:
    child = system.crossover_child([RatingPoint(0, 26.0, 3.0)] * 3)
    assert child.mu == pytest.approx(26.0)
    assert child.sigma == pytest.approx(math.sqrt(9.0 / 3 + 1.0))
    with pytest.raises(ValueError):
        system.crossover_child([])


def test_child_variance_boost_is_a_setting() -> None:
    system = RatingSystem(TrueSkillSettings(child_variance_boost=0.0))
    assert system.mutation_child(RatingPoint(0, 25.0, 2.0)).sigma == pytest.approx(2.0)


def test_conservative_and_optimistic_scores() -> None:
    rating = RatingPoint(0, 25.0, 3.0)
    assert conservative_score(rating) == 19.0
    assert optimistic_score(rating) == 31.0
    assert conservative_score(rating, k=3) == 16.0


def test_win_probability_is_symmetric(system: RatingSystem) -> None:
    strong, weak = RatingPoint(0, 30.0, 2.0), RatingPoint(0, 20.0, 2.0)
    assert system.win_probability(strong, weak) > 0.9
    assert system.win_probability(strong, weak) + system.win_probability(weak, strong) == pytest.approx(1.0)


scores_lists = st.lists(st.floats(min_value=0.0, max_value=1.0, allow_nan=False), min_size=1, max_size=8)


@given(scores_lists)
def test_ranks_are_dense_and_respect_the_tie_rule(scores: list[float]) -> None:
    ranks = tied_ranks(scores)
    assert sorted(set(ranks)) == list(range(max(ranks) + 1))
    ordered = sorted(range(len(scores)), key=lambda i: -scores[i])
    for upper, lower in zip(ordered, ordered[1:]):
        gap = scores[upper] - scores[lower]
        if gap <= 0.01:
            assert ranks[upper] == ranks[lower]
        elif gap > 0.01 + 1e-9:
            assert ranks[lower] == ranks[upper] + 1


@given(scores_lists)
def test_a_match_never_reorders_equal_priors_against_the_result(scores: list[float]) -> None:
    system = RatingSystem()
    ids = [f"p{i}" for i in range(len(scores))]
    outcome = system.play(list(zip(ids, scores)), fresh_ratings(system, *ids))
    for a in ids:
        for b in ids:
            if outcome.ranks[a] < outcome.ranks[b]:
                assert outcome.after[a].mu > outcome.after[b].mu
