"""Methods made of parts: a prompt selection, and a trainer and/or an evolver, driven by the loop.

`espl`, `rl`, `evolution`, `reflect` and `base` are each a `ComposedMethod` that says which
parts it has (`compose`); the shared `IterationLoop` draws the problems, runs the rollouts and
hands each batch to `learn`, which steps whichever parts exist. Where the reflector shares
nothing that computes with the trainer (its own engine, or remote servers such as the fleet:
`espl.run.builder.reflector_overlaps_update`), evolution runs concurrently with the weight
update, with the same result as in sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from espl.evolution.evolver import Evolver
from espl.evolution.population import Population
from espl.evolution.selection import SelectionStrategy, select_prompts
from espl.methods.protocol import MethodResult
from espl.run.loop import IterationBatch, IterationLoop
from espl.run.phases import Phase

if TYPE_CHECKING:
    from espl.run.context import Policy, Run


@dataclass
class Parts:
    """What a composed method learns with."""

    population: Population
    selection: SelectionStrategy
    """How the M slots are filled from the newest-K window."""
    policy: Policy | None = None
    """The trainable policy: an RL step per iteration (None: frozen weights)."""
    evolver: Evolver | None = None
    """Rating, mutation, crossover of the population (None: a fixed prompt)."""


class ComposedMethod:
    """Base of the methods the shared loop drives; subclasses say what parts they have."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    trains_weights: ClassVar[bool] = False

    def compose(self, run: Run) -> Parts:
        raise NotImplementedError

    def run(self, run: Run) -> MethodResult:
        self.start(run)
        IterationLoop(run, self).run_iterations()
        return MethodResult(self.population, run.eval_prompt(self.population))

    def start(self, run: Run) -> None:
        self._run = run
        self.parts = self.compose(run)

    # -- what the loop calls -----------------------------------------------------------------
    @property
    def population(self) -> Population:
        return self.parts.population

    def select(self, iteration: int, rng: np.random.Generator) -> list[str]:
        population = self.parts.population
        window = population.window()
        m = self._run.config.evolution.prompts_per_iteration
        return select_prompts(self.parts.selection, window, population.ratings(window), m, rng)

    def learn(self, batch: IterationBatch) -> dict[str, Any]:
        out: dict[str, Any] = {"evolution": {}}
        timings: dict[str, float] = {}
        run, evolver, policy = self._run, self.parts.evolver, self.parts.policy
        finish = None
        if evolver is not None:
            finish = evolver.start(batch.iteration, batch.prompt_ids, batch.trajectories, batch.slots, batch.rng,
                                   run.seed(batch.iteration, Phase.REFLECT))
        if policy is not None:
            started = time.perf_counter()
            out["train"] = policy.update(batch.trajectories, batch.group_keys)
            run.state.budget.optimizer_steps += 0 if out["train"].get("skipped") else 1
            timings["update_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if finish is not None:
            step = finish()
            out["evolution"] = step.record
            run.state.budget.add_reflector(step.usage.calls, step.usage.prompt_tokens, step.usage.completion_tokens)
        timings["evolve_s"] = time.perf_counter() - started
        out["timings"] = timings
        return out
