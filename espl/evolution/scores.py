"""An iteration's scores: the one definition of how well a prompt did on the batch.

A prompt's score is the mean reward of all its rollouts of the iteration, slots and problems
together (or of its best slot only, as E-SPL's reference code scores a prompt drawn twice). A rollout that ended in an engine error counts 0, whatever an earlier turn earned:
it is a failure under that prompt, as evaluation accuracy counts it. The TrueSkill match,
the choice of the prompt to mutate, crossover's winners and the metrics record all read
these numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from agents.trajectory import Trajectory


def scored_reward(trajectory: Trajectory) -> float:
    """A rollout's contribution to a score: its reward, or 0 if it ended in an engine error."""
    return 0.0 if trajectory.error is not None else float(trajectory.reward)


def prompt_scores(
    trajectories: Iterable[Trajectory], slots: Sequence[int] | None = None, duplicates: str = "mean"
) -> dict[str, float]:
    """Mean reward per prompt id, in order of first appearance (rollouts without an id: "").

    A prompt that filled several slots scores the mean over all of them (`duplicates="mean"`)
    or its best slot's mean (`"max"`: E-SPL's reference code ranks slots by score and keeps
    each prompt's first, i.e. best); `slots` gives each trajectory's slot."""
    if duplicates not in ("mean", "max"):
        raise ValueError(f"duplicates must be 'mean' or 'max', got {duplicates!r}")
    trajectories = list(trajectories)
    slot_of = list(slots) if slots is not None else [0] * len(trajectories)
    rewards: dict[str, dict[int, list[float]]] = {}
    for trajectory, slot in zip(trajectories, slot_of, strict=True):
        per_slot = rewards.setdefault(trajectory.prompt_id or "", {})
        per_slot.setdefault(slot if duplicates == "max" else 0, []).append(scored_reward(trajectory))
    return {prompt_id: max(sum(r) / len(r) for r in per_slot.values()) for prompt_id, per_slot in rewards.items()}


def problem_scores(trajectories: Iterable[Trajectory], prompt_ids: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """task id -> prompt id -> mean reward of that prompt's rollouts of that task."""
    allowed = set(prompt_ids) if prompt_ids is not None else None
    rewards: dict[str, dict[str, list[float]]] = {}
    for trajectory in trajectories:
        if trajectory.prompt_id is None or (allowed is not None and trajectory.prompt_id not in allowed):
            continue
        per_prompt = rewards.setdefault(str(trajectory.task_id), {})
        per_prompt.setdefault(trajectory.prompt_id, []).append(scored_reward(trajectory))
    return {task: {pid: sum(r) / len(r) for pid, r in by_prompt.items()} for task, by_prompt in rewards.items()}


def best_of(prompt_ids: Sequence[str], scores: dict[str, float]) -> str:
    """The highest-scoring id; the earliest in `prompt_ids` on a tie (the prompt to mutate)."""
    return max(prompt_ids, key=lambda pid: (scores[pid], -prompt_ids.index(pid)))
