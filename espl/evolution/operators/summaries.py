"""Mutation's first stage: what each reflected-on rollout did, in a few words.

Every rollout picked for reflection is summarised by the reflector (approach, where it went
right or wrong, what decided it). A transcript no longer than a summary would be
(`verbatim_words`) goes on as it is: a summary cannot compress it, and on CPU this stage is
most of the reflector's time. All summaries of an iteration are one batched call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agents.trajectory import Trajectory
from espl.evolution.operators import templates
from espl.evolution.operators.evidence import ProblemRollouts, prediction_of, transcript_of
from espl.evolution.operators.text import clean_for_prompt
from espl.evolution.reflector import ReflectorLike, ask_safely

if TYPE_CHECKING:
    from espl.evolution.operators.mutation import MutationConfig


@dataclass
class ReflectedProblem:
    """A problem mutation reflects on: its rollouts, those picked, and their summaries."""

    group: ProblemRollouts
    picked: list[Trajectory]
    summaries: list[tuple[bool, str]] = field(default_factory=list)
    """(succeeded, summary) per picked rollout, in rollout order."""


def summarise(problems: list[ReflectedProblem], reflector: ReflectorLike, config: MutationConfig, notes: list[str]) -> int:
    """Fill each problem's summaries (in rollout order); returns how many went on verbatim."""
    jobs: list[tuple[ReflectedProblem, Trajectory, str, str | None]] = []
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
        gold=gold_text(group),
        transcript=clean_for_prompt(transcript, config.transcript_chars) or templates.NONE_TEXT,
        max_words=config.summary_words,
    )
    return templates.conversation(text)


def gold_text(group: ProblemRollouts) -> str:
    gold = group.gold
    return clean_for_prompt(gold, 300) if gold else templates.UNKNOWN_GOLD
