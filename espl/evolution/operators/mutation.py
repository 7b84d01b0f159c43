"""Mutation: the reflector rewrites the iteration's best prompt from its own rollouts.

Four stages, each one batched `generate` call at most:

1. Summaries. Every rollout of a problem with mixed outcomes under this prompt (some samples
   right, some wrong) is summarised: approach, where it went right or wrong, what decided it.
   A transcript no longer than the summary would be (`verbatim_words`) goes on as it is: a
   summary cannot compress it, and on CPU this stage is most of the reflector's time.
2. Critiques. Per mixed problem, the reflector sees the principles and that problem's
   summaries split into successes and failures, and proposes at most two `add` / `modify`
   edits as JSON.
3. Revision plan. One call merges all proposals into a consistent plan of `add`, `modify`
   and `merge` operations, every principle at most 32 words.
4. The plan is applied and the list renumbered G0..Gn; the child records its parent, the
   operator and the step.

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
from espl.evolution.operators import templates
from espl.evolution.operators.apply import apply_edits
from espl.evolution.operators.edits import ADD, MERGE, MODIFY, Edit, EditRules, parse_edits, records
from espl.evolution.reflector import ReflectorLike, ask_safely
from espl.evolution.operators.protocol import IdSource, OperatorContext, Proposal, build_child
from espl.evolution.operators.evidence import ProblemRollouts, group_by_problem, prediction_of, transcript_of
from espl.evolution.operators.text import clean_for_prompt
from espl.evolution.system_prompt import MAX_PRINCIPLE_WORDS, MUTATION_OPERATOR, PromptLimits, SystemPrompt
from espl.evolution.rating import RatingLike, RatingSystem

MIXED, FAILURES = "mixed", "failures"


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
    tokens_per_edit_word: float = 2.0
    """The JSON stages get at most what their longest valid answer needs (edits x words x
    this, plus markup), within the caps above: beyond that a reply cannot be valid, and a
    small reflector that rambles on would spend most of the stage's time."""
    limits: PromptLimits = field(default_factory=PromptLimits)


@dataclass
class _Problem:
    group: ProblemRollouts
    picked: list[Trajectory]
    summaries: list[tuple[bool, str]] = field(default_factory=list)


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

    trace["verbatim"] = _summarise(problems, reflector, config, notes)
    problems = [p for p in problems if p.summaries]
    trace["summaries"] = sum(len(p.summaries) for p in problems)
    if not problems:
        return finish(None, "no rollout summary came back")

    proposals = _critique(parent, problems, mode, reflector, config, notes)
    trace["proposals"] = [{"task": task, **edit.to_record()} for task, edit in proposals]
    if not proposals:
        return finish(None, "no critique proposed a valid edit")

    plan, plan_error = _plan(parent, [edit for _, edit in proposals], reflector, config, notes)
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


def _choose_problems(groups: list[ProblemRollouts], config: MutationConfig) -> tuple[list[_Problem], str, str]:
    mixed = [g for g in groups if g.is_mixed()]
    if mixed:
        chosen = mixed[: config.max_problems] if config.max_problems is not None else mixed
        return [_Problem(g, _interleave(g, config.max_rollouts_per_problem)) for g in chosen], MIXED, ""
    if not groups:
        return [], MIXED, "no usable rollout of this prompt"
    failed = [g for g in groups if g.all_failed()]
    if not config.reflect_on_failures or not failed:
        why = "no problem had mixed outcomes"
        return [], MIXED, why + (" (reflect_on_failures is off)" if failed else "")
    chosen = failed[: config.max_problems] if config.max_problems is not None else failed
    cap = config.failure_rollouts_per_problem
    return [_Problem(g, list(g.rollouts[:cap])) for g in chosen], FAILURES, ""


def _interleave(group: ProblemRollouts, cap: int | None) -> list[Trajectory]:
    """Successes and failures alternately, so a cap keeps both sides of the contrast."""
    wins, losses = group.successes(), group.failures()
    order: list[Trajectory] = []
    for i in range(max(len(wins), len(losses))):
        order.extend(t for t in (wins[i : i + 1] + losses[i : i + 1]))
    return order[:cap] if cap is not None else order


# -- stage 1: summaries ------------------------------------------------------------------------


def _summarise(problems: list[_Problem], reflector: ReflectorLike, config: MutationConfig, notes: list[str]) -> int:
    """Fill each problem's summaries (in rollout order); returns how many went on verbatim."""
    jobs: list[tuple[_Problem, Trajectory, str, str | None]] = []
    for problem in problems:
        for trajectory in problem.picked:
            transcript = transcript_of(trajectory)
            jobs.append((problem, trajectory, transcript, _verbatim(trajectory, transcript, config)))
    asked = [_summary_conversation(p.group, t, transcript, config) for p, t, transcript, verbatim in jobs
             if verbatim is None]
    replies = iter(ask_safely(reflector, asked, max_tokens=config.summary_tokens))
    for problem, trajectory, _, verbatim in jobs:
        if verbatim is None:
            reply = next(replies)
            text = clean_for_prompt(reply.text, config.summary_chars) if reply.ok else ""
            if not text:
                notes.append(f"summary of a rollout of {problem.group.task_id} missing: {reply.error or 'empty reply'}")
                continue
        else:
            text = verbatim
        problem.summaries.append((trajectory.succeeded, text))
    return len(jobs) - len(asked)


def _verbatim(trajectory: Trajectory, transcript: str, config: MutationConfig) -> str | None:
    """The transcript itself, with the parsed answer of a failure, when it is short enough."""
    if not transcript.strip() or len(transcript.split()) > config.verbatim_words:
        return None
    text = clean_for_prompt(transcript, config.summary_chars)
    prediction = prediction_of(trajectory)
    if prediction is not None and not trajectory.succeeded:
        text += f" (final answer read as: {clean_for_prompt(prediction, 200)})"
    return text


def _summary_conversation(
    group: ProblemRollouts, trajectory: Trajectory, transcript: str, config: MutationConfig
) -> list[dict[str, str]]:
    succeeded = trajectory.succeeded
    outcome = "succeeded" if succeeded else "failed"
    prediction = prediction_of(trajectory)
    if prediction is not None and not succeeded:
        outcome += f"; its final answer was read as: {clean_for_prompt(prediction, 200)}"
    text = templates.SUMMARY.substitute(
        outcome=outcome,
        reward=f"{trajectory.reward:g}",
        question=clean_for_prompt(group.question, config.question_chars),
        gold=_gold_text(group),
        transcript=clean_for_prompt(transcript, config.transcript_chars) or templates.NONE_TEXT,
        max_words=config.summary_words,
    )
    return templates.conversation(text)


def _gold_text(group: ProblemRollouts) -> str:
    gold = group.gold
    return clean_for_prompt(gold, 300) if gold else templates.UNKNOWN_GOLD


# -- stage 2: critiques ------------------------------------------------------------------------


def _critique(
    parent: SystemPrompt,
    problems: list[_Problem],
    mode: str,
    reflector: ReflectorLike,
    config: MutationConfig,
    notes: list[str],
) -> list[tuple[str, Edit]]:
    principles = templates.numbered(parent.principles)
    contrast = templates.CONTRAST_MIXED if mode == MIXED else templates.CONTRAST_FAILED
    conversations = [
        templates.conversation(
            templates.CRITIQUE.substitute(
                principles=principles,
                contrast=contrast,
                question=clean_for_prompt(p.group.question, config.question_chars),
                gold=_gold_text(p.group),
                successes=templates.bullets([s for ok, s in p.summaries if ok]),
                failures=templates.bullets([s for ok, s in p.summaries if not ok]),
                max_edits=config.max_edits_per_problem,
                max_words=config.max_principle_words,
            )
        )
        for p in problems
    ]
    rules = EditRules(
        allowed_ops=frozenset({ADD, MODIFY}),
        n_principles=len(parent.principles),
        max_words=config.max_principle_words,
        overlong=config.overlong,
        max_edits=config.max_edits_per_problem,
    )
    budget = min(config.critique_tokens, edit_tokens(config.max_edits_per_problem, config))
    replies = ask_safely(reflector, conversations, max_tokens=budget, stop=templates.JSON_BLOCK_END)
    proposals: list[tuple[str, Edit]] = []
    for problem, reply in zip(problems, replies):
        task = problem.group.task_id
        if not reply.ok:
            notes.append(f"critique of {task} failed: {reply.error}")
            continue
        parsed = parse_edits(reply.text, rules)
        if parsed.error:
            notes.append(f"critique of {task} unreadable: {parsed.error}")
        notes.extend(f"critique of {task}: {reason}" for reason in parsed.rejected)
        proposals.extend((task, edit) for edit in parsed.edits)
    return proposals


EDIT_MARKUP_TOKENS = 24
"""Per edit: braces, keys, quotes and an index; once more for the fence and the list."""


def edit_tokens(edits: int, config: MutationConfig) -> int:
    """Tokens enough for a fenced JSON list of `edits` edits of the longest allowed principle."""
    per_edit = config.max_principle_words * config.tokens_per_edit_word + EDIT_MARKUP_TOKENS
    return int(edits * per_edit) + EDIT_MARKUP_TOKENS


# -- stage 3: revision plan --------------------------------------------------------------------


def _plan(
    parent: SystemPrompt, proposals: list[Edit], reflector: ReflectorLike, config: MutationConfig, notes: list[str]
) -> tuple[list[Edit], str | None]:
    text = templates.PLAN.substitute(
        principles=templates.numbered(parent.principles),
        proposals=templates.bullets([edit.describe() for edit in proposals]),
        max_words=config.max_principle_words,
    )
    budget = min(config.plan_tokens, edit_tokens(len(proposals), config))
    (reply,) = ask_safely(reflector, [templates.conversation(text)], max_tokens=budget,
                          stop=templates.JSON_BLOCK_END)
    if not reply.ok:
        return [], f"the revision-plan call failed: {reply.error}"
    rules = EditRules(
        allowed_ops=frozenset({ADD, MODIFY, MERGE}),
        n_principles=len(parent.principles),
        max_words=config.max_principle_words,
        overlong=config.overlong,
    )
    parsed = parse_edits(reply.text, rules)
    notes.extend(f"revision plan: {reason}" for reason in parsed.rejected)
    if parsed.error:
        return [], f"the revision plan is unreadable: {parsed.error}"
    if not parsed.edits:
        return [], "the revision plan has no valid edit"
    return parsed.edits, None
