"""RL groups are one slot's N samples of one problem, for every method alike (E-SPL's reference)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.trajectory import Trajectory
from envs.base import Task
from espl.rl.advantages import compute_advantages
from espl.run.loop import IterationBatch

REWARDS = [1.0, 0, 0, 0, 0] + [0.0] * 5 + [0.0] * 5
"""Three slots of N=5 samples of one problem: only the first slot has a success."""


def batch(prompt_ids: list[str]) -> IterationBatch:
    trajectories = []
    for slot, prompt_id in enumerate(prompt_ids):
        for sample in range(5):
            t = Trajectory("coin", "task-0", prompt_id, slot * 5 + sample)
            t.reward = REWARDS[slot * 5 + sample]
            trajectories.append(t)
    return IterationBatch(1, prompt_ids, [Task(id="task-0", question="q", answers=("a",))], trajectories,
                          np.random.default_rng(0), samples_per_problem=5)


@pytest.mark.parametrize("prompt_ids", [["p0", "p0", "p0"], ["p0", "p1", "p2"], ["p0", "p1", "p0"]],
                         ids=["rl: one prompt in every slot", "espl: three prompts", "espl: a prompt drawn twice"])
def test_the_references_numbers_one_kept_group_of_five_with_baseline_0_2(prompt_ids: list[str]) -> None:
    keys = batch(prompt_ids).group_keys
    assert len(set(keys)) == 3
    result = compute_advantages(REWARDS, keys, "espl")
    assert result.keep.tolist() == [True] * 5 + [False] * 10
    assert result.advantages[:5].tolist() == pytest.approx([0.8, -0.2, -0.2, -0.2, -0.2])
