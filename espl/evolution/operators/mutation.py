"""Mutation: the reflector rewrites the iteration's best prompt from its own rollouts.

Four stages, each one batched `generate` call at most:

1. Summaries. Every rollout of a problem with mixed outcomes under this prompt (some samples
   right, some wrong) is summarised: approach, where it went right or wrong, what decided it.
   A transcript no longer than the summary would be (`verbatim_words`) goes on as it is: a
   summary cannot compress it, and on CPU this stage is most of the reflector's time.
   (`summaries.py`)
2. Critiques. Per mixed problem, the reflector sees the principles and that problem's
   summaries split into successes and failures, and proposes at most two `add` / `modify`
   edits as JSON, after an analysis when `reason_first` is set (`revision.py`).
3. Revision plan. One call merges the proposals into a consistent plan of `add`, `modify`
   and `merge` operations, every principle at most 32 words; or, in the reference code's
   mode, the critiques' additions go in as they are and their modifications are suggestions
   to the plan (`revision.py`).
4. The plan is applied and the list renumbered G0..Gn; the child records its parent, the
   operator and the step.

Every stage's token budget is a setting (`summary_tokens`, `critique_tokens`, `plan_tokens`,
options of the `mutation` operator) and every reflector call is also capped by the
reflector's own `max_tokens`, the same limit GEPA's reflection gets.

Only mixed problems carry a contrast between what worked and what did not, so by default a
batch with none produces no child (as in the E-SPL reference code). That starves evolution
when the policy fails almost everything, so `reflect_on_failures=True` lets a batch with no
mixed problem reflect on a few failed rollouts of the all-failed problems instead; it is off
by default to keep the published method as the default.

Anything unusable the reflector writes (an unreadable plan, edits that all fail validation,
an unchanged list) gives `Proposal(child=None, reason=...)`, never an exception.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.trajectory import Trajectory
from espl.evolution.operators.apply import apply_edits
from espl.evolution.operators.edits import records
from espl.evolution.operators.evidence import ProblemRollouts, group_by_problem
from espl.evolution.operators.protocol import IdSource, OperatorContext, Proposal, build_child
from espl.evolution.operators.revision import FAILURES, MIXED, critique, edit_tokens, revision_plan
from espl.evolution.operators.summaries import ReflectedProblem, summarise
from espl.evolution.rating import RatingLike, RatingSystem
from espl.evolution.reflector import ReflectorLike
from espl.evolution.system_prompt import MAX_PRINCIPLE_WORDS, MUTATION_OPERATOR, PromptLimits, SystemPrompt

__all__ = ["Mutation", "MutationConfig", "edit_tokens", "mutate", "mutation_child_rating"]


@dataclass(frozen=True)
class MutationConfig:
    reflect_on_failures: bool = False
    max_problems: int | None = None
    """Cap on problems reflected on (None: every mixed problem; B=10 in the paper)."""
    max_rollouts_per_problem: int | None = None
    """Cap on summarised rollouts per mixed problem, alternating successes and failures."""
    failure_rollouts_per_problem: int = 2
    max_edits_per_problem: int = 2
    max_principle_words: int = MAX_PRINCIPLE_WORDS
    overlong: Literal["truncate", "reject"] = "truncate"
    question_chars: int = 1200
    transcript_chars: int = 2400
    summary_chars: int = 600
    summary_words: int = 80
    verbatim_words: int = 80
    """Transcripts of at most this many words skip the summary call (0: summarise all)."""
    summary_tokens: int = 192
    critique_tokens: int = 384
    plan_tokens: int = 768
    reason_first: bool = False
    """The critique writes its analysis before its edit list (the paper's critique) and may
    use all of `critique_tokens`; the parser takes the last valid list."""
    plan_mode: Literal["replan", "reference"] = "replan"
    """`replan`: apply what the revision plan re-emits; `reference`: apply the critiques'
    additions as they are and plan their modifications (E-SPL's reference code)."""
    tokens_per_edit_word: float = 2.0
    """The JSON stages get at most what their longest valid answer needs (edits x words x
    this, plus markup), within the caps above: beyond that a reply cannot be valid, and a
    small reflector that rambles on would spend most of the stage's time."""
    limits: PromptLimits = field(default_factory=PromptLimits)


def mutate(
    parent: SystemPrompt,
    rollouts: Sequence[Trajectory],
    reflector: ReflectorLike,
    *,
    step: int,
    new_id: IdSource,
    config: MutationConfig | None = None,
    ratings: RatingSystem | None = None,
) -> Proposal:
    """A mutated child of `parent` from its rollouts (those with its id, or with no prompt id)."""
    config = config or MutationConfig()
    before = reflector.usage.copy()
    notes: list[str] = []
    trace: dict[str, Any] = {"parent": parent.id}

    def finish(child: SystemPrompt | None, reason: str | None) -> Proposal:
        return Proposal(child, reason, reflector.usage - before, notes, trace)

    own = [t for t in rollouts if t.prompt_id in (parent.id, None)]
    problems, mode, reason = _choose_problems(group_by_problem(own), config)
    trace.update(mode=mode, problems=[p.group.task_id for p in problems])
    if not problems:
        return finish(None, reason)

    trace["verbatim"] = summarise(problems, reflector, config, notes)
    problems = [p for p in problems if p.summaries]
    trace["summaries"] = sum(len(p.summaries) for p in problems)
    if not problems:
        return finish(None, "no rollout summary came back")

    proposals = critique(parent, problems, mode, reflector, config, notes)
    trace["proposals"] = [{"task": task, **edit.to_record()} for task, edit in proposals]
    if not proposals:
        return finish(None, "no critique proposed a valid edit")

    plan, plan_error = revision_plan(parent, [edit for _, edit in proposals], reflector, config, notes)
    trace["plan"] = records(plan)
    if plan_error:
        return finish(None, plan_error)

    outcome = apply_edits(parent.principles, plan)
    notes.extend(outcome.rejected)
    trace["applied"] = records(outcome.applied)
    if not outcome.applied:
        return finish(None, "no edit of the revision plan could be applied")
    metadata = {"mode": mode, "reflected_on": trace["problems"], "edits": trace["applied"]}
    child, reason = build_child(
        outcome.principles,
        parents=[parent],
        operator=MUTATION_OPERATOR,
        step=step,
        new_id=new_id,
        limits=config.limits,
        rating=mutation_child_rating(parent, ratings),
        metadata=metadata,
    )
    return finish(child, reason)


def mutation_child_rating(parent: SystemPrompt, ratings: RatingSystem | None) -> RatingLike | None:
    """E-SPL's rule: the parent's mean, its variance widened (None if unrated or no system)."""
    if ratings is None or parent.rating is None:
        return None
    return ratings.mutation_child(parent.rating)


class Mutation:
    """Mutation as an `Operator`: the iteration's best prompt, rewritten from its own rollouts."""

    name = MUTATION_OPERATOR

    def __init__(self, config: MutationConfig | None = None) -> None:
        self.config = config or MutationConfig()

    def propose(self, context: OperatorContext) -> Proposal:
        return mutate(
            context.best, context.trajectories, context.reflector, step=context.step, new_id=context.new_id,
            config=self.config, ratings=context.ratings,
        )

    def child_rating(self, parents: Sequence[SystemPrompt], ratings: RatingSystem) -> RatingLike | None:
        return mutation_child_rating(parents[0], ratings)


# -- problem choice ----------------------------------------------------------------------------


def _choose_problems(groups: list[ProblemRollouts], config: MutationConfig) -> tuple[list[ReflectedProblem], str, str]:
    mixed = [g for g in groups if g.is_mixed()]
    if mixed:
        chosen = mixed[: config.max_problems] if config.max_problems is not None else mixed
        return [ReflectedProblem(g, _interleave(g, config.max_rollouts_per_problem)) for g in chosen], MIXED, ""
    if not groups:
        return [], MIXED, "no usable rollout of this prompt"
    failed = [g for g in groups if g.all_failed()]
    if not config.reflect_on_failures or not failed:
        why = "no problem had mixed outcomes"
        return [], MIXED, why + (" (reflect_on_failures is off)" if failed else "")
    chosen = failed[: config.max_problems] if config.max_problems is not None else failed
    cap = config.failure_rollouts_per_problem
    return [ReflectedProblem(g, list(g.rollouts[:cap])) for g in chosen], FAILURES, ""


def _interleave(group: ProblemRollouts, cap: int | None) -> list[Trajectory]:
    """Successes and failures alternately, so a cap keeps both sides of the contrast."""
    wins, losses = group.successes(), group.failures()
    order: list[Trajectory] = []
    for i in range(max(len(wins), len(losses))):
        order.extend(t for t in (wins[i : i + 1] + losses[i : i + 1]))
    return order[:cap] if cap is not None else order
