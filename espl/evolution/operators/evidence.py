"""Views of an iteration's trajectories that the operators reflect on.

Rollouts are grouped by problem (`task_id`), per prompt. A rollout that ended in an engine
error has no transcript to learn from, so it is left out of the evidence (it still counts in
the scores, `espl.evolution.scores`). A problem is *mixed* under a prompt when some of its
samples succeeded and some failed (`Trajectory.succeeded`).

For crossover, a prompt *strictly wins* a problem when its score there is higher than every
other prompt's; equal best scores have no winner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agents.trajectory import Trajectory
from espl.evolution.scores import problem_scores

_TIE_SLACK = 1e-9
"""Float error allowance: 2/3 and 4/6 are the same mean."""
_GOLD_KEYS = ("gold", "golds", "answers", "answer", "gold_answer", "gold_answers", "target")


@dataclass(frozen=True)
class ProblemRollouts:
    """The usable rollouts of one problem under one prompt."""

    task_id: str
    rollouts: tuple[Trajectory, ...]

    @property
    def mean_reward(self) -> float:
        return sum(t.reward for t in self.rollouts) / len(self.rollouts) if self.rollouts else 0.0

    def successes(self) -> list[Trajectory]:
        return [t for t in self.rollouts if t.succeeded]

    def failures(self) -> list[Trajectory]:
        return [t for t in self.rollouts if not t.succeeded]

    def is_mixed(self) -> bool:
        return bool(self.successes()) and bool(self.failures())

    def all_failed(self) -> bool:
        return bool(self.rollouts) and not self.successes()

    @property
    def question(self) -> str:
        return question_of(self.rollouts[0]) if self.rollouts else ""

    @property
    def gold(self) -> str | None:
        for trajectory in self.rollouts:
            gold = gold_of(trajectory)
            if gold is not None:
                return gold
        return None


def usable(trajectories: Iterable[Trajectory]) -> list[Trajectory]:
    """Rollouts that reached the env: engine errors tell nothing about the prompt."""
    return [t for t in trajectories if t.error is None]


def group_by_problem(trajectories: Iterable[Trajectory], prompt_id: str | None = None) -> list[ProblemRollouts]:
    """Usable rollouts per problem, in order of first appearance; only `prompt_id`'s if given."""
    groups: dict[str, list[Trajectory]] = {}
    for trajectory in usable(trajectories):
        if prompt_id is not None and trajectory.prompt_id != prompt_id:
            continue
        groups.setdefault(str(trajectory.task_id), []).append(trajectory)
    return [ProblemRollouts(task_id, tuple(rollouts)) for task_id, rollouts in groups.items()]


def question_of(trajectory: Trajectory) -> str:
    """The first user message: the problem as the env posed it."""
    for message in trajectory.messages:
        if message.get("role") == "user":
            return str(message.get("content", ""))
    return ""


def gold_of(trajectory: Trajectory) -> str | None:
    """The reference answer when the env exposes it in its final `info`, else None."""
    info = trajectory.info if isinstance(trajectory.info, Mapping) else {}
    for key in _GOLD_KEYS:
        value = info.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (list, tuple)):
            answers = [str(v).strip() for v in value if isinstance(v, (str, int, float)) and str(v).strip()]
            if answers:
                return " | ".join(answers)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    return None


def transcript_of(trajectory: Trajectory) -> str:
    """Everything after the problem statement: agent turns and env replies, labelled."""
    lines: list[str] = []
    skipped_question = False
    for message in trajectory.messages:
        role = str(message.get("role", ""))
        if role == "user" and not skipped_question:
            skipped_question = True
            continue
        label = "AGENT" if role == "assistant" else "ENVIRONMENT"
        lines.append(f"[{label}]\n{message.get('content', '')}")
    if not lines and trajectory.response_text:
        lines.append(f"[AGENT]\n{trajectory.response_text}")
    return "\n\n".join(lines)


def prediction_of(trajectory: Trajectory) -> str | None:
    """The answer the env parsed from the agent, when it says so."""
    info: Mapping[str, Any] = trajectory.info if isinstance(trajectory.info, Mapping) else {}
    for key in ("parsed_prediction", "prediction"):
        value = info.get(key)
        if value is not None and str(value).strip():
            return str(value)
    return None


def strict_winners(
    trajectories: Iterable[Trajectory], prompt_ids: Sequence[str] | None = None, margin: float = 0.0
) -> dict[str, str]:
    """task id -> the prompt whose score on it is strictly the highest (ties: no entry); with a
    `margin`, every other prompt must trail by more than it (E-SPL's reference: 0.01)."""
    winners: dict[str, str] = {}
    for task_id, means in problem_scores(trajectories, prompt_ids).items():
        if len(means) < 2:
            continue  # nobody to beat
        best = max(means.values())
        leaders = [prompt_id for prompt_id, mean in means.items() if best - mean <= margin + _TIE_SLACK]
        if len(leaders) == 1:
            winners[task_id] = leaders[0]
    return winners
