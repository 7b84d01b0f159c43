"""What an operator returns, and how a child prompt is built from an edited principle list.

An operator either produces a child or says why not; it never raises for anything the
reflector wrote. The child carries its lineage (parents, operator, creation step) and, when a
`RatingSystem` is given and every parent is rated, its starting TrueSkill rating (the E-SPL
child rules: a mutation child keeps its parent's mean with widened variance, a crossover
child takes the precision-weighted mean of its parents). The caller then only has to
`population.add(result.child)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from espl.evolution.reflector import ReflectorUsage
from espl.evolution.system_prompt import CROSSOVER_OPERATOR, MUTATION_OPERATOR, PromptLimits, RatingPoint, SystemPrompt
from espl.evolution.rating import RatingSystem

IdSource = str | Callable[[], str]
"""A fixed id for the child, or a function that makes one (e.g. `population.new_id`)."""


@dataclass
class OperatorResult:
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


def build_child(
    principles: Sequence[str],
    *,
    parents: Sequence[SystemPrompt],
    operator: str,
    step: int,
    new_id: IdSource,
    limits: PromptLimits,
    ratings: RatingSystem | None = None,
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
    rating = _child_rating(parents, operator, ratings)
    if rating is not None:
        child.rating_history.append(RatingPoint(step=step, mu=rating[0], sigma=rating[1], event=operator))
    return child, None


def _child_rating(
    parents: Sequence[SystemPrompt], operator: str, ratings: RatingSystem | None
) -> tuple[float, float] | None:
    if ratings is None or any(p.rating is None for p in parents):
        return None
    if operator == MUTATION_OPERATOR:
        rating = ratings.mutation_child(parents[0].rating)  # type: ignore[arg-type]
    elif operator == CROSSOVER_OPERATOR:
        unique = list({p.id: p for p in parents}.values())
        rating = ratings.crossover_child([p.rating for p in unique])  # type: ignore[misc]
    else:
        return None
    return float(rating.mu), float(rating.sigma)
