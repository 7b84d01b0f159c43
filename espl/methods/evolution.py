"""Evolution only: E-SPL's population, ratings, mutation and crossover with frozen weights."""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.methods.composed import ComposedMethod, Parts
from espl.run import builder

if TYPE_CHECKING:
    from espl.run.context import Run


class Evolution(ComposedMethod):
    name = "evolution"
    description = "reflective prompt evolution (population + TrueSkill), frozen weights"

    def compose(self, run: Run) -> Parts:
        population = run.start_population()
        evolver = builder.build_evolver(run, population, rated=True)
        return Parts(population, builder.build_selection(run.plan), evolver=evolver)
