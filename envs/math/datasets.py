"""Bundled math datasets as `Task` rows, with fixed train/test splits.

Every dataset has a non-empty "train" and "test" split, plus "all" (every row, in file order)
for reporting on a full benchmark. Splits are deterministic:

| dataset    | file                       | rows  | train                         | test                    |
|------------|----------------------------|------:|-------------------------------|-------------------------|
| aime       | aime_2022_2025             |   120 | AIME 2022-2024 (90)           | AIME 2025 (30)          |
| aime2022   | aime_2022_2025             |   120 | the other three years (90)    | AIME 2022 (30)          |
| aime2023   | aime_2022_2025             |   120 | the other three years (90)    | AIME 2023 (30)          |
| aime2024   | aime_2022_2025             |   120 | the other three years (90)    | AIME 2024 (30)          |
| aime2025   | aime_2022_2025             |   120 | the other three years (90)    | AIME 2025 (30)          |
| amc23      | amc23                      |    40 | seeded half (20)              | seeded half (20)        |
| math500    | math500                    |   500 | seeded half (250)             | seeded half (250)       |
| gsm8k      | gsm8k_test                 | 1,319 | seeded half (659)             | seeded half (660)       |
| hmmt       | hmmt                       |    90 | HMMT Feb 2024 + Feb 2025 (60) | HMMT Nov 2025 (30)      |
| dapo       | dapo_math_17k_subset2000   | 2,000 | 1,798 (1,800 less 2 in test)  | 200 (seeded)            |

"Seeded" means `envs.datasets.split_rows(rows, test_size=..., seed=0)`. AIME and HMMT split
by date instead, so a model is tested on problems newer than those it trained on. DAPO-Math
is the training set; its 200 held-out problems watch for over-fitting. The other sets are
evaluation benchmarks: their "all" split is the whole benchmark, and their seeded halves let
prompt-learning methods tune on one half and report on the other.

Train and test are also disjoint by problem text (`envs.datasets.drop_overlap`: lowercased,
whitespace collapsed): a train row whose problem a test row also states is dropped from train.
Only DAPO has such rows, 2 problems that the 2,000-row subset holds under two ids each (the
subset also repeats 6 problems inside train, left as they are). "all" stays every row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from envs.base import Task
from envs.datasets import SPLIT_SEED, drop_overlap, load_rows, split_rows

SPLITS = ("train", "test", "all")
META_FIELDS = ("source", "year", "url", "level", "subject")

Row = Mapping[str, Any]
Splitter = Callable[[Sequence[Row]], tuple[list[Row], list[Row]]]


def seeded(test_size: int | float) -> Splitter:
    """Split with `split_rows` at the project-wide seed."""

    def split(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
        return split_rows(rows, test_size=test_size, seed=SPLIT_SEED)

    return split


def by_field(field: str, test_values: set[Any]) -> Splitter:
    """Rows whose `field` is in `test_values` are test; the rest are train (file order kept)."""

    def split(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
        test = [r for r in rows if r.get(field) in test_values]
        train = [r for r in rows if r.get(field) not in test_values]
        return train, test

    return split


@dataclass(frozen=True)
class MathDataset:
    """A named view of one bundled file and how it splits."""

    name: str
    file: str
    splitter: Splitter
    description: str

    def rows(self, split: str) -> list[Row]:
        rows = load_rows(self.file)
        if split == "all":
            return list(rows)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} for {self.name}; choose from {SPLITS}")
        train, test = self.splitter(rows)
        return drop_overlap(train, test, key=problem_text)[0] if split == "train" else test

    def tasks(self, split: str) -> list[Task]:
        return [row_to_task(row, self.name) for row in self.rows(split)]


def problem_text(row: Row) -> str:
    """What the agent is asked: the text that must not recur across a train/test split."""
    return str(row["problem"])


def row_to_task(row: Row, dataset: str) -> Task:
    """One bundled math row (`id`, `problem`, `answer`, ...) as a `Task`."""
    meta = {key: row[key] for key in META_FIELDS if row.get(key) is not None}
    meta["dataset"] = dataset
    return Task(id=str(row["id"]), question=problem_text(row), answers=(str(row["answer"]),), meta=meta)


AIME_YEARS = (2022, 2023, 2024, 2025)
HMMT_TEST_SOURCES = {"HMMT November 2025"}

DATASETS: dict[str, MathDataset] = {
    "aime": MathDataset(
        "aime", "aime_2022_2025", by_field("year", {2025}), "AIME 2022-2025 I+II; train 2022-2024, test 2025"
    ),
    **{
        f"aime{year}": MathDataset(
            f"aime{year}",
            "aime_2022_2025",
            by_field("year", {year}),
            f"AIME {year} I+II (30 problems); train on the other years",
        )
        for year in AIME_YEARS
    },
    "amc23": MathDataset("amc23", "amc23", seeded(0.5), "AMC 2023 (40 problems)"),
    "math500": MathDataset("math500", "math500", seeded(0.5), "MATH-500 (500 problems, levels 1-5)"),
    "gsm8k": MathDataset("gsm8k", "gsm8k_test", seeded(0.5), "GSM8K test (1,319 grade-school word problems)"),
    "hmmt": MathDataset(
        "hmmt", "hmmt", by_field("source", HMMT_TEST_SOURCES), "HMMT Feb 2024, Feb 2025, Nov 2025; test Nov 2025"
    ),
    "dapo": MathDataset("dapo", "dapo_math_17k_subset2000", seeded(200), "DAPO-Math-17k, 2,000-problem subset"),
}


def get_dataset(name: str) -> MathDataset:
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown math dataset {name!r}; known: {', '.join(DATASETS)}") from None


def load_tasks(name: str, split: str = "test") -> list[Task]:
    """The tasks of one split of a bundled math dataset (see the table above)."""
    return get_dataset(name).tasks(split)
