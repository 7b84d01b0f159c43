"""Seeds: every random choice of a run draws from (run seed, iteration, phase).

A run resumed after iteration i repeats iteration i+1 exactly because nothing draws from a
generator that lives across iterations. The phases keep the streams apart: the training
rollouts of iteration 3 and its evaluation never share noise.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class Phase(IntEnum):
    """What a seed is for (the values are part of every recorded run: never renumber)."""

    TRAIN = 0
    """Training rollouts of an iteration."""
    EVAL = 1
    """Test-set evaluation after an iteration (iteration 0: the starting policy)."""
    REFLECT = 2
    """The reflector's sampling while an iteration's prompts evolve."""
    GEPA_ROLLOUTS = 3
    """GEPA's rollouts; its "iteration" is the count of rollout calls it has made."""
    GEPA_SPLIT = 4
    """GEPA's train/validation split of the train tasks (drawn once per run)."""


def phase_seed(seed: int, iteration: int, phase: Phase) -> int:
    """The sampling seed of `phase` at `iteration` of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, iteration, int(phase)]).generate_state(1)[0])


def iteration_rng(seed: int, iteration: int) -> np.random.Generator:
    """The generator of an iteration's choices: its problems, its prompts, its operators."""
    return np.random.default_rng([seed, iteration])


def split_rng(seed: int) -> np.random.Generator:
    """The generator of a run's one-off split (GEPA's validation set)."""
    return np.random.default_rng([seed, int(Phase.GEPA_SPLIT)])
