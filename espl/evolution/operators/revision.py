"""Mutation's second and third stages: critiques propose edits, a revision plan merges them.

Critique: per reflected-on problem, the reflector sees the principles and that problem's
summaries split into successes and failures, and proposes at most `max_edits_per_problem`
`add` / `modify` edits as a fenced JSON list. With `reason_first` it writes its analysis
before the list (the paper's critique), and the parser takes the last valid list.

Revision plan, in one of two modes:

- ``"replan"``: one call merges every proposal into a consistent plan of `add`, `modify` and
  `merge` edits; only what the plan re-emits is applied.
- ``"reference"`` (E-SPL's reference code): the critiques' `add` edits are applied as they
  are; their `modify` edits are suggestions the plan call turns into edits (no call when
  there is none).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from espl.evolution.operators import templates
from espl.evolution.operators.edit_schema import edit_list_constraint
from espl.evolution.operators.edits import ADD, MERGE, MODIFY, Edit, EditRules, parse_edits
from espl.evolution.operators.summaries import ReflectedProblem, gold_text
from espl.evolution.operators.text import clean_for_prompt
from espl.evolution.reflector import ReflectorLike, ask_safely
from espl.evolution.system_prompt import SystemPrompt

if TYPE_CHECKING:
    from espl.evolution.operators.mutation import MutationConfig

MIXED, FAILURES = "mixed", "failures"


def critique(
    parent: SystemPrompt,
    problems: list[ReflectedProblem],
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
                gold=gold_text(p.group),
                successes=templates.bullets([s for ok, s in p.summaries if ok]),
                failures=templates.bullets([s for ok, s in p.summaries if not ok]),
                max_edits=config.max_edits_per_problem,
                max_words=config.max_principle_words,
                reply=templates.REASON_THEN_LIST if config.reason_first else templates.LIST_ONLY,
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
    budget = config.critique_tokens
    if not config.reason_first:  # the list alone: no reply longer than the longest valid list
        budget = stage_budget(reflector, budget, edit_tokens(config.max_edits_per_problem, config))
    replies = ask_safely(reflector, conversations, max_tokens=budget, stop=templates.JSON_BLOCK_END,
                         constraint=edit_list_constraint(rules, reason_first=config.reason_first))
    proposals: list[tuple[str, Edit]] = []
    for problem, reply in zip(problems, replies):
        task = problem.group.task_id
        if not reply.ok:
            notes.append(f"critique of {task} failed: {reply.error}")
            continue
        parsed = parse_edits(reply.text, rules, stopped=reply.finish_reason == "stop")
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


def stage_budget(reflector: ReflectorLike, cap: int, longest_valid: int) -> int:
    """A JSON stage's token budget: what its longest valid list needs, within the stage's cap;
    the cap itself when the reflector decodes against the list's schema. There the grammar
    ends the reply once the list is complete, and a small model's odd words take more than
    two tokens each: cut short, a list is unreadable (5 of 20 revision plans of the 135M
    reflector, `benchmarks/test_structured_reflection.py`)."""
    if getattr(reflector, "structured", False):
        return cap
    return min(cap, longest_valid)


# -- stage 3: revision plan --------------------------------------------------------------------


def revision_plan(
    parent: SystemPrompt, proposals: list[Edit], reflector: ReflectorLike, config: MutationConfig, notes: list[str]
) -> tuple[list[Edit], str | None]:
    """The edits to apply (see the module doc for the two modes), or none and why."""
    if config.plan_mode == "reference":
        added = [edit for edit in proposals if edit.op == ADD]
        suggestions = [edit for edit in proposals if edit.op != ADD]
        if not suggestions:
            return added, None
        planned, error = _plan(parent, suggestions, reflector, config, notes)
        if not planned + added:
            return [], error or "the revision plan has no valid edit"
        if error:
            notes.append(f"revision plan: {error}; the critiques' additions are applied as they are")
        return planned + added, None
    return _plan(parent, proposals, reflector, config, notes)


def _plan(
    parent: SystemPrompt, proposals: list[Edit], reflector: ReflectorLike, config: MutationConfig, notes: list[str]
) -> tuple[list[Edit], str | None]:
    text = templates.PLAN.substitute(
        principles=templates.numbered(parent.principles),
        proposals=templates.bullets([edit.describe() for edit in proposals]),
        max_words=config.max_principle_words,
    )
    budget = stage_budget(reflector, config.plan_tokens, edit_tokens(len(proposals), config))
    rules = EditRules(  # the reference's plan only modifies and merges: additions went in directly
        allowed_ops=frozenset({MODIFY, MERGE} if config.plan_mode == "reference" else {ADD, MODIFY, MERGE}),
        n_principles=len(parent.principles),
        max_words=config.max_principle_words,
        overlong=config.overlong,
    )
    constraint = edit_list_constraint(rules, min_edits=1, max_edits=len(proposals))
    (reply,) = ask_safely(reflector, [templates.conversation(text)], max_tokens=budget,
                          stop=templates.JSON_BLOCK_END, constraint=constraint)
    if not reply.ok:
        return [], f"the revision-plan call failed: {reply.error}"
    parsed = parse_edits(reply.text, rules, stopped=reply.finish_reason == "stop")
    notes.extend(f"revision plan: {reason}" for reason in parsed.rejected)
    if parsed.error:
        return [], f"the revision plan is unreadable: {parsed.error}"
    if not parsed.edits:
        return [], "the revision plan has no valid edit"
    return parsed.edits, None
