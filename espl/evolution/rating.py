"""TrueSkill ratings for system prompts: one free-for-all match per iteration.

Every iteration the M selected prompts play one match whose result is their mean batch reward.
The `trueskill` package does the Bayesian update; this module decides who ties, merges a prompt
that was selected twice into one player, and seeds the ratings of new children from their
parents. A dedicated `trueskill.TrueSkill` environment is always used, never the package's
global one, so two rating systems in one process cannot leak settings into each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trueskill

TIE_TOLERANCE = 0.01
"""Adjacent mean rewards this close are a draw (the E-SPL rule)."""

_FLOAT_SLACK = 1e-9
"""Absorbs float error, so 0.51 - 0.50 (= 0.0100000000000000009) still counts as a tie."""


class RatingLike(Protocol):
    """Anything with a TrueSkill mean and standard deviation (trueskill.Rating, RatingPoint)."""

    @property
    def mu(self) -> float: ...

    @property
    def sigma(self) -> float: ...


@dataclass(frozen=True)
class TrueSkillSettings:
    """The E-SPL paper's settings are the defaults (the package defaults, with draws at 10%)."""

    mu: float = 25.0
    sigma: float = 25.0 / 3.0
    beta: float = 25.0 / 6.0
    tau: float = 25.0 / 300.0
    draw_probability: float = 0.1
    tie_tolerance: float = TIE_TOLERANCE
    child_variance_boost: float = 1.0
    """Added to a child's variance (sigma^2) so it is explored before it is trusted."""


def conservative_score(rating: RatingLike, k: float = 2.0) -> float:
    """mu - k*sigma: the skill we are fairly sure the prompt has (pick the champion by it)."""
    return rating.mu - k * rating.sigma


def optimistic_score(rating: RatingLike, k: float = 2.0) -> float:
    """mu + k*sigma: the skill the prompt might have (pick challengers by it)."""
    return rating.mu + k * rating.sigma


def collapse_duplicates(results: Iterable[tuple[str, float]]) -> dict[str, float]:
    """One score per prompt id: a prompt selected k times scores the mean of its k batch means.

    Insertion order follows the first occurrence, so the match is reproducible.
    """
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for prompt_id, score in results:
        score = float(score)
        if math.isnan(score):
            raise ValueError(f"score of prompt {prompt_id!r} is NaN")
        totals[prompt_id] = totals.get(prompt_id, 0.0) + score
        counts[prompt_id] = counts.get(prompt_id, 0) + 1
    return {prompt_id: totals[prompt_id] / counts[prompt_id] for prompt_id in totals}


def tied_ranks(scores: Sequence[float], tolerance: float = TIE_TOLERANCE) -> list[int]:
    """TrueSkill ranks (0 = best) for `scores`, higher being better, with chained ties.

    Scores are sorted best first; each one shares the rank of the one just above it when the
    gap between the two is at most `tolerance`. Ties therefore chain: 0.50, 0.505, 0.512 are
    one three-way draw although the ends are 0.012 apart, because each adjacent gap is within
    the tolerance. Ranks are dense (0, 1, 2, ...), which is all `trueskill` needs.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    rank = 0
    for position, index in enumerate(order):
        if position > 0:
            previous = order[position - 1]
            if scores[previous] - scores[index] > tolerance + _FLOAT_SLACK:
                rank += 1
        ranks[index] = rank
    return ranks


@dataclass(frozen=True)
class MatchOutcome:
    """What one match did: each distinct player's score, rank, and rating before and after."""

    scores: dict[str, float]
    ranks: dict[str, int]
    before: dict[str, trueskill.Rating]
    after: dict[str, trueskill.Rating]
    played: bool = True
    notes: list[str] = field(default_factory=list)


class RatingSystem:
    """A TrueSkill environment plus the E-SPL conventions for matches and children."""

    def __init__(self, settings: TrueSkillSettings | None = None) -> None:
        self.settings = settings or TrueSkillSettings()
        s = self.settings
        self.env = trueskill.TrueSkill(
            mu=s.mu, sigma=s.sigma, beta=s.beta, tau=s.tau, draw_probability=s.draw_probability
        )

    def fresh(self) -> trueskill.Rating:
        """The prior of a seed prompt."""
        return self.env.create_rating()

    def rating(self, like: RatingLike) -> trueskill.Rating:
        return self.env.create_rating(mu=float(like.mu), sigma=float(like.sigma))

    def mutation_child(self, parent: RatingLike) -> trueskill.Rating:
        """Same mean as the parent, variance widened: sigma' = sqrt(sigma^2 + boost)."""
        sigma = math.sqrt(parent.sigma**2 + self.settings.child_variance_boost)
        return self.env.create_rating(mu=float(parent.mu), sigma=sigma)

    def crossover_child(self, parents: Sequence[RatingLike]) -> trueskill.Rating:
        """Precision-weighted mean of the parents' mu; sigma'^2 = 1/sum(1/sigma_i^2) + boost."""
        if not parents:
            raise ValueError("a crossover child needs at least one parent")
        precisions = [1.0 / p.sigma**2 for p in parents]
        total_precision = sum(precisions)
        mu = sum(w * p.mu for w, p in zip(precisions, parents)) / total_precision
        sigma = math.sqrt(1.0 / total_precision + self.settings.child_variance_boost)
        return self.env.create_rating(mu=mu, sigma=sigma)

    def play(
        self,
        results: Iterable[tuple[str, float]] | Mapping[str, float],
        ratings: Mapping[str, RatingLike],
    ) -> MatchOutcome:
        """Rate one free-for-all match from (prompt id, mean batch reward) pairs.

        Duplicated ids collapse into one player first. With fewer than two distinct players
        there is nobody to compare with, so ratings are returned unchanged (`played=False`).
        """
        pairs = results.items() if isinstance(results, Mapping) else results
        scores = collapse_duplicates(pairs)
        missing = [prompt_id for prompt_id in scores if prompt_id not in ratings]
        if missing:
            raise KeyError(f"no rating for prompt(s) {missing}")
        ids = list(scores)
        before = {prompt_id: self.rating(ratings[prompt_id]) for prompt_id in ids}
        ranks_list = tied_ranks([scores[i] for i in ids], self.settings.tie_tolerance)
        ranks = dict(zip(ids, ranks_list))
        if len(ids) < 2:
            return MatchOutcome(
                scores, ranks, before, dict(before), played=False, notes=["fewer than two players"]
            )
        rated = self.env.rate([(before[i],) for i in ids], ranks=ranks_list)
        after = {prompt_id: group[0] for prompt_id, group in zip(ids, rated)}
        return MatchOutcome(scores, ranks, before, after)

    def win_probability(self, a: RatingLike, b: RatingLike) -> float:
        """P(a beats b) under the model; handy for reports and sanity checks."""
        delta = a.mu - b.mu
        denominator = math.sqrt(2 * self.settings.beta**2 + a.sigma**2 + b.sigma**2)
        return self.env.cdf(delta / denominator)
