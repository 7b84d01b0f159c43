"""E-SPL: RL on the weights plus an evolving, TrueSkill-rated population of system prompts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.methods.composed import ComposedMethod, Parts
from espl.run import builder

if TYPE_CHECKING:
    from espl.run.context import Run


class ESPL(ComposedMethod):
    name = "espl"
    description = "RL on the LoRA weights + evolutionary system prompt learning"
    trains_weights = True

    def compose(self, run: Run) -> Parts:
        population = run.start_population()
        evolver = builder.build_evolver(run, population, rated=True)
        return Parts(population, builder.build_selection(run.plan), policy=run.policy, evolver=evolver)
