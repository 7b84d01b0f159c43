"""The method protocol: a training method says what it needs built, then spends the run's budget.

A method receives a `Run` (`espl.run.context`): the policy, the rollout drivers, the records.
It composes what it learns with (a trainer and/or an evolver, `espl.methods.composed`) or
drives an optimizer of its own (GEPA), and returns the population it ended with and the
prompt it evaluated. Every method records through the same `Run`, so every run directory
reads the same to the leaderboard.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from espl.evolution.population import Population
from espl.evolution.system_prompt import SystemPrompt

if TYPE_CHECKING:
    from espl.run.context import Run


@dataclass
class MethodResult:
    """How a method's run ended: its population, the prompt it evaluated, summary extras."""

    population: Population
    eval_prompt: SystemPrompt
    summary: dict[str, Any] = field(default_factory=dict)
    """Method-specific entries added to `summary.json` (GEPA's settings and counts)."""


@runtime_checkable
class Method(Protocol):
    name: str
    description: str
    trains_weights: bool
    """The run builds the policy with a LoRA trainer and hands each update to the engine."""

    def run(self, run: Run) -> MethodResult:
        """Spend the run's budget (resuming where `run.state` stands) and return the result."""
        ...
