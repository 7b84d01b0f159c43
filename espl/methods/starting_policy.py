"""Base: no training; evaluates the starting policy under the seed prompt."""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.evolution.selection import make_strategy
from espl.methods.composed import ComposedMethod, Parts
from espl.methods.protocol import MethodResult
from espl.run.loop import IterationLoop

if TYPE_CHECKING:
    from espl.run.context import Run


class Base(ComposedMethod):
    name = "base"
    description = "evaluation of the starting policy only"

    def compose(self, run: Run) -> Parts:
        return Parts(run.start_population(), make_strategy("newest"))

    def run(self, run: Run) -> MethodResult:
        self.start(run)
        if not run.state.evals:
            IterationLoop(run, self).evaluate_start()
        return MethodResult(self.population, run.eval_prompt(self.population))
