"""GEPA's knobs, its budget in our units, and the train/validation split of the train tasks.

Budget: `evolution` runs `iterations` iterations of M prompts x B problems x N samples
(B capped by the number of train tasks) and checks `max_rollouts` before each iteration, so
it spends whole iterations. GEPA gets exactly that many training rollouts, and its run is
cut into the same number of equal windows ("iterations" in `metrics.jsonl`), so learning
curves of both methods line up rollout for rollout.

Validation: GEPA scores every accepted candidate on its whole validation set, drawn (seeded)
from the env's train split; the rest is GEPA's training set for reflection minibatches.
The validation set is at most a quarter of the budget, so the seed's scoring leaves room
for proposals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from envs.base import Task
from espl.config import RunConfig
from espl.run.phases import split_rng


@dataclass(frozen=True)
class GEPASettings:
    """Arguments of `gepa.optimize`; the defaults are GEPA's own, except the validation size."""

    valset_size: int = 50
    valset_budget_fraction: float = 0.25
    """The validation set holds at most this share of the rollout budget."""
    minibatch_size: int = 3
    """Tasks per reflection minibatch (GEPA's `reflection_minibatch_size`)."""
    candidate_selection: str = "pareto"
    frontier_type: str = "instance"
    acceptance: str = "strict_improvement"
    skip_perfect_score: bool = True
    use_merge: bool = False
    max_merge_invocations: int = 5

    def __post_init__(self) -> None:
        if self.valset_size < 1 or self.minibatch_size < 1:
            raise ValueError("valset_size and minibatch_size must be at least 1")
        if not 0.0 < self.valset_budget_fraction <= 1.0:
            raise ValueError("valset_budget_fraction must be in (0, 1]")

    def valset_size_for(self, budget: int, n_tasks: int) -> int:
        """Validation tasks for a run of `budget` rollouts over `n_tasks` train tasks.

        At least one task stays out of it for GEPA's training set.
        """
        by_budget = max(1, int(budget * self.valset_budget_fraction))
        return max(1, min(self.valset_size, by_budget, n_tasks - 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def rollouts_per_iteration(config: RunConfig, n_train_tasks: int) -> int:
    """M x B x N of one `evolution` iteration (B capped by the train tasks, as the loop does)."""
    problems = min(config.problems_per_iteration, n_train_tasks)
    return config.evolution.prompts_per_iteration * problems * config.samples_per_problem


def budget_iterations(config: RunConfig, n_train_tasks: int) -> int:
    """How many iterations `evolution` completes: `iterations`, or fewer under `max_rollouts`."""
    per_iteration = rollouts_per_iteration(config, n_train_tasks)
    iterations = max(config.iterations, 0)
    if per_iteration <= 0:
        return 0
    if config.max_rollouts is not None:
        iterations = min(iterations, -(-max(config.max_rollouts, 0) // per_iteration))
    return iterations


def train_rollout_budget(config: RunConfig, n_train_tasks: int) -> int:
    """Training rollouts `evolution` spends on this config: GEPA's budget."""
    return budget_iterations(config, n_train_tasks) * rollouts_per_iteration(config, n_train_tasks)


def split_train_tasks(tasks: Sequence[Task], valset_size: int, seed: int) -> tuple[list[Task], list[Task]]:
    """(GEPA's training set, its validation set): a seeded shuffle of the env's train tasks."""
    if len(tasks) < 2:
        raise ValueError("GEPA needs at least two train tasks (one to validate on, one to reflect on)")
    order = split_rng(seed).permutation(len(tasks))
    valset_size = max(1, min(valset_size, len(tasks) - 1))
    val = [tasks[i] for i in order[:valset_size]]
    train = [tasks[i] for i in order[valset_size:]]
    return train, val
