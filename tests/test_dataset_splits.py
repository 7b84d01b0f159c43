"""Every registered environment's train and test splits are disjoint by normalised question text.

Disjoint ids are not enough: a bundled file can hold the same problem twice under two ids
(DAPO-Math-17k repeats problems; PopQA asks "who was the director of College?" about two
films), and a problem seen in training is no test of generalisation. Splits are built
through the registry, as a run builds them, so an env added later is checked too. Datasets
only: no model, no retrieval server, no verifier.
"""

from __future__ import annotations

import pytest

import envs
from envs.base import Task
from envs.datasets import drop_overlap, normalise_text


def normalised(text: str) -> str:
    """Lowercase with runs of whitespace collapsed: the issue's definition, kept apart from the code's."""
    return " ".join(text.lower().split())


def split_tasks(env_id: str, split: str) -> list[Task]:
    """The tasks of one split, or none where the env has no such split (it refuses to build)."""
    try:
        return envs.make(env_id, split=split).tasks
    except ValueError:  # an unknown or empty split
        return []


@pytest.mark.parametrize("env_id", [e.id for e in envs.list_envs()])
def test_train_and_test_share_no_question_text(env_id: str) -> None:
    test = split_tasks(env_id, "test")
    train = split_tasks(env_id, "train")
    assert test or train, f"{env_id} builds neither a train nor a test split"
    shared = {normalised(t.question) for t in train} & {normalised(t.question) for t in test}
    assert not shared, f"{env_id}: {len(shared)} question(s) in both splits, e.g. {sorted(shared)[0]!r}"


def test_normalise_text_folds_case_and_whitespace() -> None:
    assert normalise_text("  Who   was\tthe\nDirector? ") == "who was the director?"
    assert normalise_text("a b") != normalise_text("ab")


def test_drop_overlap_removes_only_train_rows_and_keeps_order() -> None:
    train = ["What is 2+2?", "what is  2+2?", "Name a prime.", "Name  an even number."]
    test = ["WHAT IS 2+2?", "Name an even number."]
    kept, dropped = drop_overlap(train, test, key=str)
    assert kept == ["Name a prime."]
    assert dropped == ["What is 2+2?", "what is  2+2?", "Name  an even number."]
    assert drop_overlap(train, [], key=str) == (train, [])
