"""Which M prompts of the newest-K window play this iteration, and which one is evaluated.

Every strategy force-includes the newest prompt, so each new child is tried at least once
right after it is born. Strategies return distinct ids (never more than the window holds);
`select_prompts` then decides what happens when the window is smaller than M.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from espl.evolution.rating import RatingLike, conservative_score, optimistic_score
from espl.plugins import load_plugins

ShortWindowPolicy = Literal["repeat", "fewer"]
EvalRule = Literal["newest", "best"]
EVAL_RULES: tuple[str, ...] = ("newest", "best")


class SelectionStrategy(Protocol):
    """Picks up to `m` distinct ids from `window` (oldest first), the newest always first."""

    name: str

    def select(
        self,
        window: Sequence[str],
        ratings: Mapping[str, RatingLike],
        m: int,
        rng: np.random.Generator,
    ) -> list[str]: ...


def _check(window: Sequence[str], m: int) -> tuple[str, list[str]]:
    """Validate the call; return the newest id and the other ids."""
    if m < 1:
        raise ValueError("m must be at least 1")
    if not window:
        raise ValueError("cannot select from an empty window")
    if len(set(window)) != len(window):
        raise ValueError("the window holds a prompt id twice")
    return window[-1], list(window[:-1])


def _scores(
    ids: Sequence[str], ratings: Mapping[str, RatingLike], score: Callable[[RatingLike], float]
) -> np.ndarray:
    missing = [i for i in ids if i not in ratings]
    if missing:
        raise KeyError(f"no rating for prompt(s) {missing}")
    return np.array([score(ratings[i]) for i in ids], dtype=float)


def _best_first(ids: Sequence[str], scores: np.ndarray, rng: np.random.Generator) -> list[str]:
    """Ids by score, highest first; equal scores are ordered at random (seeded by `rng`)."""
    tiebreak = rng.permutation(len(ids))
    order = np.lexsort((tiebreak, -scores))
    return [ids[i] for i in order]


@dataclass(frozen=True)
class NewestSelection:
    """The newest prompt only (a fixed prompt, or a single lineage's current one); the slots
    are all filled with it by `select_prompts`."""

    name: str = "newest"

    def select(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], m: int, rng: np.random.Generator
    ) -> list[str]:
        newest, _ = _check(window, m)
        return [newest]


@dataclass(frozen=True)
class UniformSelection:
    """The newest plus a uniform draw without replacement; ratings are ignored."""

    name: str = "uniform"

    def select(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], m: int, rng: np.random.Generator
    ) -> list[str]:
        newest, others = _check(window, m)
        take = min(m - 1, len(others))
        drawn = rng.choice(len(others), size=take, replace=False) if take else []
        return [newest, *(others[int(i)] for i in drawn)]


@dataclass(frozen=True)
class UCBSelection:
    """The newest plus the others with the highest optimistic score mu + k*sigma."""

    k: float = 2.0
    name: str = "ucb"

    def select(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], m: int, rng: np.random.Generator
    ) -> list[str]:
        newest, others = _check(window, m)
        scores = _scores(others, ratings, lambda r: optimistic_score(r, self.k))
        return [newest, *_best_first(others, scores, rng)[: m - 1]]


@dataclass(frozen=True)
class LUCBSelection:
    """The newest, a champion by mu - k*sigma, then challengers by mu + k*sigma.

    The champion is the window's best conservative score; when that is the newest prompt
    itself, every remaining slot goes to a challenger.
    """

    k: float = 2.0
    name: str = "lucb"

    def champion(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], rng: np.random.Generator
    ) -> str:
        scores = _scores(window, ratings, lambda r: conservative_score(r, self.k))
        return _best_first(window, scores, rng)[0]

    def select(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], m: int, rng: np.random.Generator
    ) -> list[str]:
        newest, _ = _check(window, m)
        chosen = [newest]
        if m > 1:
            champion = self.champion(window, ratings, rng)
            if champion != newest:
                chosen.append(champion)
        rest = [i for i in window if i not in chosen]
        scores = _scores(rest, ratings, lambda r: optimistic_score(r, self.k))
        return chosen + _best_first(rest, scores, rng)[: m - len(chosen)]


@dataclass(frozen=True)
class SoftmaxSelection:
    """The newest plus a draw without replacement with weights exp((mu + k*sigma) / T).

    The default temperature is TrueSkill's beta (25/6), the skill gap that means roughly a
    76% win chance, so weights follow how much better a prompt is likely to be. With
    `reference_temperature`, T is E-SPL's reference code's: the largest score, at least 1
    (about 40 for fresh prompts, so the draw is close to uniform).
    """

    temperature: float = 25.0 / 6.0
    k: float = 2.0
    reference_temperature: bool = False
    name: str = "softmax"

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError("softmax temperature must be positive")

    def select(
        self, window: Sequence[str], ratings: Mapping[str, RatingLike], m: int, rng: np.random.Generator
    ) -> list[str]:
        newest, others = _check(window, m)
        take = min(m - 1, len(others))
        if not take:
            return [newest]
        scores = _scores(others, ratings, lambda r: optimistic_score(r, self.k))
        temperature = max(float(scores.max()), 1.0) if self.reference_temperature else self.temperature
        logits = scores / temperature
        weights = np.exp(logits - logits.max())
        drawn = rng.choice(len(others), size=take, replace=False, p=weights / weights.sum())
        return [newest, *(others[int(i)] for i in drawn)]


_STRATEGIES: dict[str, Callable[..., SelectionStrategy]] = {
    "newest": NewestSelection,
    "uniform": UniformSelection,
    "ucb": UCBSelection,
    "lucb": LUCBSelection,
    "softmax": SoftmaxSelection,
}


def register_strategy(name: str, factory: Callable[..., SelectionStrategy]) -> None:
    if name in _STRATEGIES:
        raise ValueError(f"selection strategy {name!r} is already registered")
    _STRATEGIES[name] = factory


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)


def make_strategy(name: str, **options: float) -> SelectionStrategy:
    """Build a strategy by name, e.g. `make_strategy("softmax", temperature=2.0)`; an unknown
    name or option is a `ValueError`."""
    load_plugins()
    try:
        factory = _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose from {strategy_names()}") from None
    if "name" in options:
        raise ValueError(f"selection strategy {name!r}: 'name' is not an option")
    try:
        return factory(**options)
    except TypeError as error:
        raise ValueError(f"selection strategy {name!r}: {error}") from None


def select_prompts(
    strategy: SelectionStrategy,
    window: Sequence[str],
    ratings: Mapping[str, RatingLike],
    m: int,
    rng: np.random.Generator,
    short_window: ShortWindowPolicy = "repeat",
) -> list[str]:
    """The strategy's picks, padded to exactly `m` slots when the window is too small.

    With "repeat" (the default) the distinct picks are cycled, newest first, so every
    iteration runs M x B x N rollouts like the RL-only baseline; the repeated prompt's slots
    collapse into one player in the TrueSkill match. With "fewer" only the distinct picks run.
    """
    picks = strategy.select(window, ratings, m, rng)
    if short_window == "fewer" or len(picks) >= m:
        return picks
    if short_window != "repeat":
        raise ValueError(f"unknown short-window policy {short_window!r}")
    return [picks[i % len(picks)] for i in range(m)]


def choose_eval_prompt(
    members: Sequence[str],
    ratings: Mapping[str, RatingLike],
    rule: EvalRule = "newest",
    k: float = 2.0,
) -> str:
    """The prompt to evaluate on the test set.

    "newest" is what the E-SPL code evaluates. "best" takes the highest mu - k*sigma among
    rated members (the newer one on a tie), which suits a final report; it falls back to the
    newest when nothing is rated yet.
    """
    if not members:
        raise ValueError("no prompt to evaluate")
    if rule == "newest":
        return members[-1]
    if rule != "best":
        raise ValueError(f"unknown evaluation rule {rule!r}; choose from {EVAL_RULES}")
    best_id, best_score = members[-1], -math.inf
    for prompt_id in reversed(members):
        if prompt_id in ratings:
            score = conservative_score(ratings[prompt_id], k)
            if score > best_score:
                best_id, best_score = prompt_id, score
    return best_id
