"""The evolver: one iteration's evolution of the prompt population.

After the iteration's rollouts, in order:

1. Rating match (when the population is rated): the distinct prompts that ran play one
   TrueSkill match on their scores, and their new ratings are recorded.
2. Operators, each with its probability (E-SPL: mutation always, crossover with 0.2). The
   coins are drawn from the iteration's generator before anything runs (`start`), so the
   draw does not depend on whether evolution overlaps the weight update.
3. Children join the population (a FIFO cap may evict the oldest member), in the operators'
   order or in `children_order` (E-SPL's reference adds the crossover child first, so the
   mutation child is the newest prompt). Ids are handed out as proposals are made.

The reflector's usage of the iteration is counted here and nowhere else: it is reset and
reseeded from (run seed, iteration) at the start, so a resumed run reflects exactly as the
uninterrupted one did, and returned with the record for the run's budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.trajectory import Trajectory
from espl.evolution.operators.protocol import Operator, OperatorContext
from espl.evolution.population import Population
from espl.evolution.rating import RatingSystem
from espl.evolution.scores import prompt_scores
from espl.evolution.reflector import Reflector, ReflectorUsage
from espl.evolution.system_prompt import SystemPrompt


@dataclass(frozen=True)
class ScheduledOperator:
    """An operator and the probability that it runs in a given iteration."""

    operator: Operator
    probability: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"operator {self.operator.name!r}: probability must be in [0, 1]")


@dataclass
class EvolutionStep:
    """What one iteration's evolution did (`record` goes to metrics.jsonl) and what it cost."""

    record: dict[str, Any]
    usage: ReflectorUsage


class Evolver:
    """Rates, varies and grows a population, one iteration at a time (see the module doc)."""

    def __init__(
        self,
        population: Population,
        reflector: Reflector,
        operators: Sequence[ScheduledOperator],
        *,
        ratings: RatingSystem | None = None,
        concurrent: bool = False,
        children_order: Sequence[str] = (),
        duplicate_scores: str = "mean",
    ) -> None:
        self.population = population
        self.reflector = reflector
        self.operators = list(operators)
        self.ratings = ratings
        """None: an unrated population (no matches, unrated children)."""
        self.concurrent = concurrent
        """Whether evolution may overlap the weight update (the reflector shares nothing that
        computes with the trainer: `espl.run.builder.reflector_overlaps_update`)."""
        self.duplicate_scores = duplicate_scores
        """How a prompt in several slots is scored for the match and the operators (`scores.py`)."""
        self.children_order = list(children_order)
        """Operator names whose children join first, in this order (the rest follow as proposed)."""

    def draw(self, rng: np.random.Generator) -> list[bool]:
        """Which operators run this iteration: a coin from `rng` for each probability below 1."""
        return [True if s.probability >= 1.0 else float(rng.random()) < s.probability for s in self.operators]

    def start(
        self,
        step: int,
        prompt_ids: Sequence[str],
        trajectories: Sequence[Trajectory],
        slots: Sequence[int],
        rng: np.random.Generator,
        seed: int | None,
    ) -> Callable[[], EvolutionStep]:
        """Draw the operators' coins, then evolve now or in a thread; call the result to finish."""
        scores = prompt_scores(trajectories, slots, self.duplicate_scores)
        chosen = self.draw(rng)
        work = lambda: self.evolve(step, prompt_ids, trajectories, scores, chosen, seed)  # noqa: E731
        if not self.concurrent:
            return work
        pool = ThreadPoolExecutor(max_workers=1)
        future = pool.submit(work)
        pool.shutdown(wait=False)
        return future.result

    def evolve(
        self,
        step: int,
        prompt_ids: Sequence[str],
        trajectories: Sequence[Trajectory],
        scores: Mapping[str, float],
        chosen: Sequence[bool],
        seed: int | None,
    ) -> EvolutionStep:
        record: dict[str, Any] = {}
        unique = list(dict.fromkeys(prompt_ids))
        if self.ratings is not None:
            outcome = self.ratings.play({pid: scores[pid] for pid in unique}, self.population.ratings(unique))
            if outcome.played:
                self.population.record_ratings(step, outcome.after)
            record["match"] = {"ranks": outcome.ranks, "played": outcome.played}
        self.reflector.begin(seed)
        ids = itertools.count(self.population.next_index)
        children: list[tuple[str, SystemPrompt]] = []
        for scheduled, runs in zip(self.operators, chosen, strict=True):
            if not runs:
                continue
            context = OperatorContext(
                step=step, prompts=[self.population.get(pid) for pid in unique], scores=scores,
                trajectories=trajectories, reflector=self.reflector, new_id=lambda: f"p{next(ids):04d}",
                ratings=self.ratings,
            )
            proposal = scheduled.operator.propose(context)
            if proposal is None:
                continue
            record[scheduled.operator.name] = proposal.to_record()
            if proposal.child is not None:
                children.append((scheduled.operator.name, proposal.child))
        first = {name: rank for rank, name in enumerate(self.children_order)}
        for _, child in sorted(children, key=lambda item: first.get(item[0], len(first))):
            self.population.add(child)
        return EvolutionStep(record, self.reflector.usage.copy())
