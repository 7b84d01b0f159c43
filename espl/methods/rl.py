"""RL only: the same RL step as E-SPL under a fixed system prompt (the seed prompt in every slot)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.evolution.selection import make_strategy
from espl.methods.composed import ComposedMethod, Parts

if TYPE_CHECKING:
    from espl.run.context import Run


class RL(ComposedMethod):
    name = "rl"
    description = "RL on the LoRA weights, fixed system prompt"
    trains_weights = True

    def compose(self, run: Run) -> Parts:
        return Parts(run.start_population(), make_strategy("newest"), policy=run.policy)
