"""What GEPA's reflection model reads about one rollout: the question, the transcript, feedback.

GEPA improves a prompt from textual feedback, so the feedback carries everything the env
judged: the reward, the reference answer, the answer it read from the response and why it
was scored that way (math envs: `parsed_prediction`, `gold`, `reason`; search envs:
`prediction`, `golds`, `em`, `f1`, the retrieved titles and whether the answer was among
them), plus engine errors and truncation. Texts are cleaned of chat-control markers and
clipped in the middle, so one long transcript cannot crowd the others out of the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agents.trajectory import Trajectory
from espl.evolution.operators.evidence import gold_of, prediction_of, question_of, transcript_of
from espl.evolution.operators.text import clean_for_prompt, one_line

ReflectiveRecord = dict[str, Any]


class FeedbackWriter(Protocol):
    """Turns one finished rollout into a record of GEPA's reflective dataset."""

    def record(self, trajectory: Trajectory) -> ReflectiveRecord: ...


@dataclass(frozen=True)
class EnvFeedback:
    """Reflective records built from the env's final `info` (the default `FeedbackWriter`).

    The record follows GEPA's suggested layout (`Inputs`, `Generated Outputs`, `Feedback`),
    which its default reflection template renders as one markdown section per key.
    """

    max_question_chars: int = 1200
    max_transcript_chars: int = 1600
    max_feedback_chars: int = 800
    max_titles: int = 8

    def record(self, trajectory: Trajectory) -> ReflectiveRecord:
        return {
            "Inputs": {"question": clean_for_prompt(question_of(trajectory), self.max_question_chars)},
            "Generated Outputs": clean_for_prompt(transcript_of(trajectory), self.max_transcript_chars)
            or "(the agent produced no text)",
            "Feedback": clean_for_prompt(self.feedback(trajectory), self.max_feedback_chars),
        }

    def feedback(self, trajectory: Trajectory) -> str:
        """The env's verdict on one rollout, in plain sentences."""
        info: Mapping[str, Any] = trajectory.info if isinstance(trajectory.info, Mapping) else {}
        verdict = "correct" if trajectory.succeeded else "incorrect"
        lines = [f"Reward: {trajectory.reward:g} ({verdict})."]
        if trajectory.error is not None:
            lines.append(f"The episode failed before the env could judge it: {one_line(trajectory.error)}.")
        gold = _answers(info.get("golds")) or _text(info.get("gold")) or gold_of(trajectory)
        if gold:
            lines.append(f"Reference answer: {gold}.")
        lines += self._prediction_lines(trajectory, info)
        lines += self._search_lines(info)
        if trajectory.truncated:
            lines.append("The episode was cut off by the turn or length limit before the agent finished.")
        return "\n".join(lines)

    def _prediction_lines(self, trajectory: Trajectory, info: Mapping[str, Any]) -> list[str]:
        lines: list[str] = []
        if "parsed_prediction" in info:  # math: the verifier's reading of the response
            parsed = _text(info.get("parsed_prediction"))
            lines.append(
                f"Answer read from the response: {parsed}." if parsed else "No final answer could be read from the response."
            )
        elif "prediction" in info:  # search: the content of <answer>
            prediction = _text(info.get("prediction"))
            answered = info.get("answered", bool(prediction))
            lines.append(f"The agent answered: {prediction}." if answered and prediction else "The agent gave no final answer.")
        elif (prediction := prediction_of(trajectory)) is not None:
            lines.append(f"The agent answered: {prediction}.")
        reason = _text(info.get("reason"))
        if reason:
            lines.append(f"Verifier verdict: {reason}.")
        return lines

    def _search_lines(self, info: Mapping[str, Any]) -> list[str]:
        lines: list[str] = []
        if "em" in info or "f1" in info:
            lines.append(f"Exact match: {_number(info.get('em'))}; token F1: {_number(info.get('f1'))}.")
        if "n_searches" in info:
            lines.append(f"Searches made: {info.get('n_searches')}.")
        titles = _titles(info.get("retrieved"))
        if titles:
            shown = titles[: self.max_titles]
            more = f" (and {len(titles) - len(shown)} more)" if len(titles) > len(shown) else ""
            lines.append(f"Titles of the retrieved passages: {'; '.join(shown)}{more}.")
        elif "retrieved" in info:
            lines.append("No passage was retrieved.")
        if "answer_in_retrieved" in info:
            found = bool(info.get("answer_in_retrieved"))
            lines.append(
                "The reference answer appeared in the retrieved passages."
                if found
                else "The reference answer never appeared in the retrieved passages."
            )
        return lines


def _text(value: Any) -> str:
    return one_line(str(value)) if value is not None and str(value).strip() else ""


def _answers(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " | ".join(_text(v) for v in value if _text(v))
    return ""


def _number(value: Any) -> str:
    return f"{float(value):.2f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "n/a"


def _titles(retrieved: Any) -> list[str]:
    if not isinstance(retrieved, Sequence) or isinstance(retrieved, str):
        return []
    titles = [_text(p.get("title")) for p in retrieved if isinstance(p, Mapping)]
    return list(dict.fromkeys(t for t in titles if t))
