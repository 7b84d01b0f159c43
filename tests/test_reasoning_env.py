"""reasoning-gym envs: disjoint deterministic splits and the dataset's own scoring."""

from __future__ import annotations

import pytest

from envs import make
from envs.reasoning.env import extract_answer


@pytest.mark.parametrize("name", ["arithmetic", "arithmetic-hard"])
def test_splits_are_disjoint_and_deterministic(name: str) -> None:
    train, test = make(name, split="train"), make(name, split="test")
    assert train.tasks and test.tasks
    assert not {t.question for t in train.tasks} & {t.question for t in test.tasks}
    assert [t.id for t in make(name, split="test").tasks] == [t.id for t in test.tasks]


def test_reward_uses_the_dataset_scorer() -> None:
    env = make("arithmetic")
    task = env.tasks[0]
    env.reset(options={"task": task})
    _, reward, terminated, _, info = env.step(f"Let me compute. <answer>{task.answers[0]}</answer>")
    assert (reward, terminated, info["correct"]) == (1.0, True, True)
    env.reset(options={"task": task})
    wrong = str(int(task.answers[0]) + 1)
    assert env.step(f"<answer>{wrong}</answer>")[1] == 0.0


@pytest.mark.parametrize(
    ("reply", "expected"),
    [("<answer> 7 </answer>", "7"), ("a <answer>1</answer> b <answer>2</answer>", "2"), ("so \\boxed{12}", "12"), ("x\n\n 5 \n", "5"), ("it is 12, not 13.", "13"), ("no number here", "no number here"), ("", "")],
)
def test_extract_answer(reply: str, expected: str) -> None:
    assert extract_answer(reply) == expected
