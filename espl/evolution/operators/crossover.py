"""Crossover: the best prompt of the iteration borrows from prompts that beat it on some problems.

All M prompts of an iteration ran the same problems. For each problem the prompt with the
strictly highest mean reward wins it (a tie at the top has no winner). One reflector call
shows set A, the iteration's best prompt by score, and every other prompt that won at least
one problem together with the problems it won (question and reference answer); it returns
`add` / `modify` / `remove` edits to A, each citing its evidence. The child's parents are A
followed by those winners.

The caller decides when to cross over (E-SPL: with probability 0.2 per iteration, besides the
mutation). An iteration where no other prompt won a problem has nothing to borrow: no child.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agents.trajectory import Trajectory
from espl.evolution.operators import templates
from espl.evolution.operators.apply import apply_edits
from espl.evolution.operators.edit_schema import edit_list_constraint
from espl.evolution.operators.edits import ADD, MODIFY, REMOVE, EditRules, parse_edits, records
from espl.evolution.reflector import ReflectorLike, ask_safely
from espl.evolution.operators.protocol import IdSource, OperatorContext, Proposal, build_child
from espl.evolution.operators.evidence import group_by_problem, gold_of, strict_winners
from espl.evolution.operators.text import clean_for_prompt
from espl.evolution.system_prompt import CROSSOVER_OPERATOR, MAX_PRINCIPLE_WORDS, PromptLimits, SystemPrompt
from espl.evolution.rating import RatingLike, RatingSystem
from espl.evolution.scores import prompt_scores


@dataclass(frozen=True)
class CrossoverConfig:
    max_tasks_per_set: int = 4
    """Problems shown per winning set (its first wins, in batch order)."""
    question_chars: int = 600
    max_principle_words: int = MAX_PRINCIPLE_WORDS
    overlong: Literal["truncate", "reject"] = "truncate"
    require_evidence: bool = True
    reply_tokens: int = 768
    reason_first: bool = False
    """Write an analysis before the edit list (the parser takes the last valid list)."""
    show_gold: bool = True
    """Show each won problem's reference answer (E-SPL's reference code shows the problems only)."""
    show_best_wins: bool = False
    """Also list the problems set A itself won (E-SPL's reference code does)."""
    require_best_wins: bool = False
    """Cross over only when set A itself won a problem (E-SPL's reference code)."""
    win_margin: float = 0.0
    """A prompt wins a problem when every other trails it by more than this (reference: 0.01)."""
    limits: PromptLimits = field(default_factory=PromptLimits)


def best_prompt(prompts: Sequence[SystemPrompt], scores: Mapping[str, float]) -> SystemPrompt | None:
    """The highest-scoring prompt; the earliest in `prompts` on a tie; None if none is scored."""
    scored = [p for p in prompts if p.id in scores]
    if not scored:
        return None
    return max(scored, key=lambda p: (scores[p.id], -scored.index(p)))


def crossover(
    prompts: Sequence[SystemPrompt],
    rollouts: Sequence[Trajectory],
    reflector: ReflectorLike,
    *,
    step: int,
    new_id: IdSource,
    scores: Mapping[str, float] | None = None,
    config: CrossoverConfig | None = None,
    ratings: RatingSystem | None = None,
) -> Proposal:
    """A crossover child of the best prompt (see the module doc). `scores` default: mean reward."""
    config = config or CrossoverConfig()
    before = reflector.usage.copy()
    notes: list[str] = []
    trace: dict[str, Any] = {}

    def finish(child: SystemPrompt | None, reason: str | None) -> Proposal:
        return Proposal(child, reason, reflector.usage - before, notes, trace)

    unique = list({p.id: p for p in prompts}.values())
    ids = [p.id for p in unique]
    scores = dict(scores) if scores is not None else prompt_scores(rollouts)
    best = best_prompt(unique, scores)
    if best is None:
        return finish(None, "no prompt has a score")
    winners = strict_winners(rollouts, ids, config.win_margin)
    won: dict[str, list[str]] = {}
    for task_id, prompt_id in winners.items():
        won.setdefault(prompt_id, []).append(task_id)
    others = [p for p in unique if p.id != best.id and p.id in won]
    trace.update(best=best.id, winners=winners, others=[p.id for p in others])
    if not others:
        return finish(None, "no other prompt strictly won a problem")
    if config.require_best_wins and not won.get(best.id):
        return finish(None, "the best prompt won no problem of its own")

    text = _crossover_text(best, others, won, rollouts, config)
    rules = EditRules(
        allowed_ops=frozenset({ADD, MODIFY, REMOVE}),
        n_principles=len(best.principles),
        max_words=config.max_principle_words,
        overlong=config.overlong,
        require_evidence=config.require_evidence,
    )
    (reply,) = ask_safely(reflector, [templates.conversation(text)], max_tokens=config.reply_tokens,
                          stop=templates.JSON_BLOCK_END,
                          constraint=edit_list_constraint(rules, reason_first=config.reason_first))
    if not reply.ok:
        return finish(None, f"the crossover call failed: {reply.error}")
    parsed = parse_edits(reply.text, rules, stopped=reply.finish_reason == "stop")
    notes.extend(f"crossover: {reason}" for reason in parsed.rejected)
    trace["edits"] = records(parsed.edits)
    if parsed.error:
        return finish(None, f"the crossover reply is unreadable: {parsed.error}")
    if not parsed.edits:
        return finish(None, "the crossover reply has no valid edit")

    outcome = apply_edits(best.principles, parsed.edits)
    notes.extend(outcome.rejected)
    trace["applied"] = records(outcome.applied)
    if not outcome.applied:
        return finish(None, "no crossover edit could be applied")
    metadata = {"edits": trace["applied"], "won": {p.id: won[p.id] for p in others}}
    child, reason = build_child(
        outcome.principles,
        parents=[best, *others],
        operator=CROSSOVER_OPERATOR,
        step=step,
        new_id=new_id,
        limits=config.limits,
        rating=crossover_child_rating([best, *others], ratings),
        metadata=metadata,
    )
    return finish(child, reason)


def crossover_child_rating(parents: Sequence[SystemPrompt], ratings: RatingSystem | None) -> RatingLike | None:
    """E-SPL's rule: the precision-weighted mean of the distinct parents' means."""
    unique = list({p.id: p for p in parents}.values())
    if ratings is None or any(p.rating is None for p in unique):
        return None
    return ratings.crossover_child([p.rating for p in unique])  # type: ignore[misc]


class Crossover:
    """Crossover as an `Operator`: the best prompt borrows from the prompts that won problems."""

    name = CROSSOVER_OPERATOR

    def __init__(self, config: CrossoverConfig | None = None) -> None:
        self.config = config or CrossoverConfig()

    def propose(self, context: OperatorContext) -> Proposal | None:
        if len(context.prompts) < 2:
            return None  # nothing to cross with
        return crossover(
            context.prompts, context.trajectories, context.reflector, step=context.step, new_id=context.new_id,
            scores=context.scores, config=self.config, ratings=context.ratings,
        )

    def child_rating(self, parents: Sequence[SystemPrompt], ratings: RatingSystem) -> RatingLike | None:
        return crossover_child_rating(parents, ratings)


def _crossover_text(
    best: SystemPrompt,
    others: Sequence[SystemPrompt],
    won: Mapping[str, list[str]],
    rollouts: Sequence[Trajectory],
    config: CrossoverConfig,
) -> str:
    problems = {g.task_id: g for g in group_by_problem(rollouts)}
    blocks = [
        templates.OTHER_SET.substitute(
            label=templates.set_label(position),
            principles=templates.numbered(other.principles),
            tasks=_won_tasks(won[other.id], problems, config),
        )
        for position, other in enumerate(others)
    ]
    best_wins = ""
    if config.show_best_wins and won.get(best.id):
        best_wins = f"Tasks where set A was best:\n{_won_tasks(won[best.id], problems, config)}\n"
    return templates.CROSSOVER.substitute(
        best=templates.numbered(best.principles),
        best_wins=best_wins,
        others="\n\n".join(blocks),
        max_words=config.max_principle_words,
        reply=templates.CROSSOVER_REASON_THEN_LIST if config.reason_first else templates.CROSSOVER_LIST_ONLY,
    )


def _won_tasks(task_ids: Sequence[str], problems: Mapping[str, Any], config: CrossoverConfig) -> str:
    """The first won problems of a set, each with its reference answer when `show_gold`."""
    tasks = []
    for task_id in task_ids[: config.max_tasks_per_set]:
        group = problems.get(task_id)
        if group is None:
            continue
        question = clean_for_prompt(group.question, config.question_chars)
        if config.show_gold:
            gold = next((g for g in (gold_of(t) for t in group.rollouts) if g), None)
            answer = clean_for_prompt(gold, 300) if gold else templates.UNKNOWN_GOLD
            question = f"{question}\n(reference answer: {answer})"
        tasks.append(question)
    return templates.bullets(tasks)
