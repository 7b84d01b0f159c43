"""Search-QA tasks from the bundled files (provenance in `envs/data/README.md`).

Every split is deterministic: `envs.datasets.split_rows(..., seed=0)` shuffles a file's rows
with a fixed seed and takes the first `test` rows as the test set (the rest is train). Train
and test are then made disjoint by question text (`envs.datasets.drop_overlap`: lowercased,
whitespace collapsed) by dropping from train any question the test split also asks. Only
PopQA has such rows: 2 question texts, each asked about two works of one title ("who was
the director of college?": the 1927 and the 1984 film), one row in each split; the train
row goes. Each dataset also has the split ``"all"`` (train + test, so without those 2), e.g.
for evaluating on a whole benchmark. `Task.answers` holds every gold alias; `Task.meta` keeps
what a curriculum or an analysis filters on (question type, level, supporting titles).

| dataset | file(s) | train | test | how the split is drawn |
|---|---|---:|---:|---|
| hotpotqa | hotpotqa_train_subset + hotpotqa_dev_distractor | 1,302 | 500 | test = 500 dev rows (seed 0); train = the 100 train rows + the other 1,202 dev rows |
| hotpotqa_small | as hotpotqa | 196 | 64 | 196 of hotpotqa's train and 64 of its test (seed 0 each); sized like E-SPL's search split, not its data (below) |
| hotpotqa_comparison | as hotpotqa | 276 | 111 | hotpotqa's train/test restricted to `type == "comparison"` |
| 2wiki | 2wikimultihopqa_dev (all 657 have their 10 paragraphs) | 457 | 200 | seed 0 |
| musique | musique_ans_dev_paragraphs | 100 | 100 | seed 0 |
| bamboogle | bamboogle_test | 25 | 100 | seed 0 (use ``split="all"`` for the usual 125-question evaluation) |
| nq | nq_test_500 | 300 | 200 | seed 0 |
| triviaqa | triviaqa_test_500 | 300 | 200 | seed 0 |
| popqa | popqa_test_500 | 298 | 200 | seed 0; 2 train rows dropped whose question text is in test |

Because hotpotqa_small and hotpotqa_comparison draw from hotpotqa's own train and test parts,
no question is in the train split of one HotpotQA env and the test split of another.
The HotpotQA, 2Wiki and MuSiQue ids are the datasets' own (globally unique); the FlashRAG
files reuse ids like ``test_12`` across datasets, so those are prefixed (``nq/test_12``).

**Why no E-SPL split.** The E-SPL paper's search QA setting trains on an NQ + HotpotQA mix
(196 train / 64 test). hotpotqa_small has those sizes but only HotpotQA questions, and its name
says so: NQ is not mixed in because the bundled NQ questions are mostly unanswerable from the
bundled corpus (HotpotQA, 2Wiki and MuSiQue paragraphs, no wiki-18). Searching each question
as it is, a gold answer is in the top 3 passages for 11% of the 500 NQ questions (18% in the
top 10, and some of those are chance matches of a year or a party), against 55% (72%) for
HotpotQA's 1,802. A mix would make about half of the training set a test of the model's
memory, not of search. With wiki-18 behind ``retriever_url``, the ``nq`` env is meaningful on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from envs.base import Task
from envs.datasets import SPLIT_SEED, drop_overlap, load_rows, split_rows

SPLITS = ("train", "test", "all")

Rows = Sequence[Mapping[str, Any]]
TaskSplits = tuple[list[Task], list[Task]]


@dataclass(frozen=True)
class SearchDataset:
    """A named search-QA dataset: how to build its (train, test) tasks."""

    name: str
    description: str
    build: Callable[[], TaskSplits]


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _answers(values: Iterable[Any]) -> tuple[str, ...]:
    """Gold aliases as strings, without blanks or repeats, in the file's order."""
    return tuple(_unique(str(v).strip() for v in values if str(v).strip()))


# -- row -> Task converters -----------------------------------------------------------------
def _hotpot_task(row: Mapping[str, Any], dataset: str) -> Task:
    meta = {
        "dataset": dataset,
        "type": row.get("type"),
        "level": row.get("level"),
        "supporting_titles": _unique(str(title) for title, _ in row.get("supporting_facts") or []),
    }
    return Task(str(row["id"]), str(row["question"]), _answers(row["answers"]), meta)


def _musique_task(row: Mapping[str, Any]) -> Task:
    kind = str(row["id"]).split("__", 1)[0]  # e.g. "2hop", "3hop1": MuSiQue encodes the hop count in the id
    meta = {
        "dataset": "musique",
        "type": kind,
        "hops": len(row.get("question_decomposition") or []),
        "supporting_titles": _unique(str(p["title"]) for p in row.get("paragraphs") or [] if p.get("is_supporting")),
    }
    return Task(str(row["id"]), str(row["question"]), _answers(row["answers"]), meta)


def _flashrag_task(row: Mapping[str, Any], dataset: str) -> Task:
    meta: dict[str, Any] = {"dataset": dataset}
    extra = row.get("metadata") or {}
    if "prop" in extra:  # PopQA: the relation asked about and the subject's Wikipedia title
        meta.update(type=extra["prop"], subject=extra.get("s_wiki_title"))
    return Task(f"{dataset}/{row['id']}", str(row["question"]), _answers(row["golden_answers"]), meta)


# -- builders -------------------------------------------------------------------------------
HOTPOT_TEST_SIZE = 500
SMALL_TRAIN_SIZE = 196
SMALL_TEST_SIZE = 64


def _split(tasks: Sequence[Task], test_size: int) -> TaskSplits:
    return split_rows(tasks, test_size=test_size, seed=SPLIT_SEED)


def _hotpotqa() -> TaskSplits:
    dev = [_hotpot_task(r, "hotpotqa") for r in load_rows("hotpotqa_dev_distractor")]
    train_rows = [_hotpot_task(r, "hotpotqa") for r in load_rows("hotpotqa_train_subset")]
    dev_train, test = _split(dev, HOTPOT_TEST_SIZE)
    return train_rows + dev_train, test


def _hotpotqa_small() -> TaskSplits:
    train, test = _cached_splits("hotpotqa")
    return _split(train, SMALL_TRAIN_SIZE)[1], _split(test, SMALL_TEST_SIZE)[1]


def _hotpotqa_comparison() -> TaskSplits:
    train, test = _cached_splits("hotpotqa")
    return [t for t in train if t.meta["type"] == "comparison"], [t for t in test if t.meta["type"] == "comparison"]


def _two_wiki() -> TaskSplits:
    return _split([_hotpot_task(r, "2wiki") for r in load_rows("2wikimultihopqa_dev")], 200)


def _musique() -> TaskSplits:
    return _split([_musique_task(r) for r in load_rows("musique_ans_dev_paragraphs")], 100)


def _flashrag(file: str, dataset: str, test_size: int) -> Callable[[], TaskSplits]:
    def build() -> TaskSplits:
        return _split([_flashrag_task(r, dataset) for r in load_rows(file)], test_size)

    return build


DATASETS: dict[str, SearchDataset] = {
    d.name: d
    for d in (
        SearchDataset("hotpotqa", "HotpotQA multi-hop QA (distractor-setting dev + train subset)", _hotpotqa),
        SearchDataset("hotpotqa_small", "HotpotQA, 196 train / 64 test (E-SPL's sizes, no NQ)", _hotpotqa_small),
        SearchDataset("hotpotqa_comparison", "HotpotQA comparison questions only", _hotpotqa_comparison),
        SearchDataset("2wiki", "2WikiMultiHopQA dev records with their paragraphs", _two_wiki),
        SearchDataset("musique", "MuSiQue-Ans dev records with their paragraphs", _musique),
        SearchDataset("bamboogle", "Bamboogle (FlashRAG copy)", _flashrag("bamboogle_test", "bamboogle", 100)),
        SearchDataset("nq", "Natural Questions (open), 500-question sample", _flashrag("nq_test_500", "nq", 200)),
        SearchDataset("triviaqa", "TriviaQA, 500-question sample", _flashrag("triviaqa_test_500", "triviaqa", 200)),
        SearchDataset("popqa", "PopQA, 500-question sample", _flashrag("popqa_test_500", "popqa", 200)),
    )
}


@lru_cache(maxsize=None)
def _cached_splits(dataset: str) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    try:
        spec = DATASETS[dataset]
    except KeyError:
        raise KeyError(f"unknown search dataset {dataset!r}; known: {', '.join(DATASETS)}") from None
    train, test = spec.build()
    train, _ = drop_overlap(train, test, key=lambda task: task.question)
    return tuple(train), tuple(test)


def load_tasks(dataset: str, split: str = "test") -> list[Task]:
    """The tasks of one split (``"train"``, ``"test"`` or ``"all"``) of a search dataset."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    train, test = _cached_splits(dataset)
    if split == "train":
        return list(train)
    if split == "test":
        return list(test)
    return [*train, *test]
