"""The operator protocol: what a variation operator sees, what it proposes, how a child is built.

An operator looks at one iteration (the prompts that ran, their scores, every trajectory)
through an `OperatorContext` and proposes at most one child prompt. It never raises for
anything the reflector wrote: a `Proposal` carries either the child or the reason there is
none, plus the reflection budget spent either way. Each operator also owns the rule for its
child's starting TrueSkill rating (`child_rating`), so adding an operator is one file and a
registration (`espl.evolution.operators.register_operator`), with no switch elsewhere.

The child carries its lineage (parents, operator name, creation step); the `Evolver` adds it
to the population.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agents.trajectory import Trajectory
from espl.evolution.rating import RatingLike, RatingSystem
from espl.evolution.reflector import ReflectorLike, ReflectorUsage
from espl.evolution.scores import best_of
from espl.evolution.system_prompt import PromptLimits, RatingPoint, SystemPrompt

IdSource = str | Callable[[], str]
"""A fixed id for the child, or a function that makes one (e.g. `population.new_id`)."""


@dataclass
class Proposal:
    """A child prompt, or None and the reason; plus the reflection budget spent either way."""

    child: SystemPrompt | None
    reason: str | None
    usage: ReflectorUsage
    notes: list[str] = field(default_factory=list)
    """Edits dropped and other things worth a look, one line each."""
    trace: dict[str, Any] = field(default_factory=dict)
    """JSON-ready record of each stage (counts, summaries, proposed and applied edits)."""

    @property
    def ok(self) -> bool:
        return self.child is not None

    def to_record(self) -> dict[str, Any]:
        return {
            "child": self.child.id if self.child is not None else None,
            "reason": self.reason,
            "usage": self.usage.to_record(),
            "notes": list(self.notes),
            "trace": self.trace,
        }


@dataclass(frozen=True)
class OperatorContext:
    """One iteration as an operator sees it."""

    step: int
    prompts: Sequence[SystemPrompt]
    """The iteration's distinct prompts, in slot order."""
    scores: Mapping[str, float]
    """Each prompt's score (`espl.evolution.scores.prompt_scores`)."""
    trajectories: Sequence[Trajectory]
    reflector: ReflectorLike
    new_id: IdSource
    ratings: RatingSystem | None = None
    """The population's rating system; None when the population is not rated."""

    @property
    def best(self) -> SystemPrompt:
        """The iteration's best prompt by score (the earliest slot on a tie)."""
        ids = [p.id for p in self.prompts]
        return self.prompts[ids.index(best_of(ids, dict(self.scores)))]


@runtime_checkable
class Operator(Protocol):
    """Proposes a child prompt from one iteration's evidence."""

    name: str

    def propose(self, context: OperatorContext) -> Proposal | None:
        """A proposal, or None when the operator does not apply to this iteration (nothing is
        recorded then, e.g. crossover with a single distinct prompt)."""
        ...

    def child_rating(self, parents: Sequence[SystemPrompt], ratings: RatingSystem) -> RatingLike | None:
        """The child's starting rating from its (rated) parents; None leaves it unrated."""
        ...


def build_child(
    principles: Sequence[str],
    *,
    parents: Sequence[SystemPrompt],
    operator: str,
    step: int,
    new_id: IdSource,
    limits: PromptLimits,
    rating: RatingLike | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[SystemPrompt | None, str | None]:
    """The child prompt (header of the first parent), or None and why it cannot exist."""
    capped = limits.apply(principles)
    if not capped:
        return None, "the edits left no principle"
    if capped == tuple(parents[0].principles):
        return None, "the edits leave the principles unchanged"
    child_id = new_id() if callable(new_id) else new_id
    child = SystemPrompt(
        id=child_id,
        principles=capped,
        parents=tuple(dict.fromkeys(p.id for p in parents)),
        operator=operator,
        created_step=step,
        header=parents[0].header,
        metadata=dict(metadata or {}),
    )
    if rating is not None:
        child.rating_history.append(
            RatingPoint(step=step, mu=float(rating.mu), sigma=float(rating.sigma), event=operator)
        )
    return child, None
