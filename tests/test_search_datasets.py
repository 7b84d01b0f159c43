"""Search-QA datasets: documented sizes, deterministic and disjoint splits, gold aliases and meta."""

from __future__ import annotations

import pytest

from envs.search import datasets
from envs.search.datasets import DATASETS, load_tasks

SIZES = {  # the table in envs/search/datasets.py's docstring
    "hotpotqa": (1302, 500),
    "hotpotqa_small": (196, 64),
    "hotpotqa_comparison": (276, 111),
    "2wiki": (457, 200),
    "musique": (100, 100),
    "bamboogle": (25, 100),
    "nq": (300, 200),
    "triviaqa": (300, 200),
    "popqa": (298, 200),  # 2 train rows dropped: their question text is in test
}


def test_every_dataset_has_a_documented_size() -> None:
    assert set(SIZES) == set(DATASETS)
    for name in DATASETS:
        assert f"| {name} |" in datasets.__doc__


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes_disjoint_and_complete(name: str) -> None:
    train, test, everything = (load_tasks(name, s) for s in ("train", "test", "all"))
    assert (len(train), len(test)) == SIZES[name]
    train_ids, test_ids = {t.id for t in train}, {t.id for t in test}
    assert len(train_ids) == len(train) and len(test_ids) == len(test)  # no duplicates
    assert not train_ids & test_ids
    assert [t.id for t in everything] == [t.id for t in train + test]
    for task in everything:
        assert task.question.strip() and task.answers and all(a.strip() for a in task.answers)
        assert task.meta["dataset"] == name.split("_")[0]


def test_splits_are_deterministic_across_rebuilds() -> None:
    before = {name: [t.id for t in load_tasks(name, "test")] for name in ("hotpotqa", "hotpotqa_small", "nq")}
    datasets._cached_splits.cache_clear()
    after = {name: [t.id for t in load_tasks(name, "test")] for name in before}
    assert before == after


def test_hotpotqa_variants_never_mix_train_and_test() -> None:
    train, test = ({t.id for t in load_tasks("hotpotqa", s)} for s in ("train", "test"))
    for variant in ("hotpotqa_small", "hotpotqa_comparison"):
        assert {t.id for t in load_tasks(variant, "train")} <= train
        assert {t.id for t in load_tasks(variant, "test")} <= test
    # All 100 train-file questions are in train; the test split is dev only.
    assert sum(t.meta["level"] != "hard" for t in load_tasks("hotpotqa", "train")) > 0
    assert all(t.meta["level"] == "hard" for t in load_tasks("hotpotqa", "test"))


def test_comparison_env_holds_only_comparison_questions() -> None:
    tasks = load_tasks("hotpotqa_comparison", "all")
    assert {t.meta["type"] for t in tasks} == {"comparison"}
    everything = load_tasks("hotpotqa", "all")
    assert len(tasks) == sum(t.meta["type"] == "comparison" for t in everything)


def test_meta_keeps_supporting_titles_and_types() -> None:
    hotpot = load_tasks("hotpotqa", "all")
    assert {t.meta["type"] for t in hotpot} == {"bridge", "comparison"}
    assert all(len(t.meta["supporting_titles"]) >= 2 for t in hotpot)
    wiki = load_tasks("2wiki", "all")
    assert {"comparison", "bridge_comparison", "compositional", "inference"} == {t.meta["type"] for t in wiki}
    musique = load_tasks("musique", "all")
    assert all(t.meta["hops"] == int(t.meta["type"][0]) for t in musique)
    assert all(len(t.meta["supporting_titles"]) >= 1 for t in musique)
    popqa = load_tasks("popqa", "all")
    assert all(t.meta["type"] and t.meta["subject"] for t in popqa)


def test_answers_hold_every_gold_alias() -> None:
    trivia = {t.id: t for t in load_tasks("triviaqa", "all")}
    assert trivia["triviaqa/test_11159"].answers == ("55", "fifty-five")
    musique = load_tasks("musique", "all")
    assert max(len(t.answers) for t in musique) > 3  # answer + answer_aliases
    nq_ids = {t.id for t in load_tasks("nq", "all")}
    assert all(i.startswith("nq/") for i in nq_ids)


def test_unknown_names_fail_clearly() -> None:
    with pytest.raises(KeyError, match="known: hotpotqa"):
        load_tasks("squad")
    with pytest.raises(ValueError, match="unknown split"):
        load_tasks("nq", "dev")
