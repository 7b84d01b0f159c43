"""Self-reflection: a single lineage; each iteration the reflector rewrites the current prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.evolution.selection import make_strategy
from espl.methods.composed import ComposedMethod, Parts
from espl.run import builder

if TYPE_CHECKING:
    from espl.run.context import Run


class Reflect(ComposedMethod):
    name = "reflect"
    description = "single-lineage self-reflection (mutation only), frozen weights"

    def compose(self, run: Run) -> Parts:
        population = run.start_population(capacity=1)  # the child replaces its parent
        evolver = builder.build_evolver(run, population, rated=False, operators=("mutation",))
        return Parts(population, make_strategy("newest"), evolver=evolver)
