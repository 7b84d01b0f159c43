"""Bundled datasets: gzipped JSONL files under `envs/data/` (provenance in its README).

Splits are deterministic: a permutation drawn from `numpy.random.default_rng(seed)`. They are
also disjoint by question *text*, not only by id: a file can hold one problem under two ids
(DAPO-Math-17k repeats problems; PopQA asks one question text about two films of one title),
so the math and search loaders pass their (train, test) through `drop_overlap`, which removes
from the train side whatever the test side asks. The test side is never touched, so reported
scores stay comparable with the documented test sets. Text is compared by `normalise_text`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"
SPLIT_SEED = 0
"""The seed of every bundled train/test split unless an env documents another."""

T = TypeVar("T")


def data_path(name: str) -> Path:
    """The path of a bundled file, e.g. ``data_path("gsm8k_test")``."""
    path = DATA_DIR / (name if name.endswith(".jsonl.gz") else f"{name}.jsonl.gz")
    if not path.exists():
        raise FileNotFoundError(f"no bundled dataset {name!r} in {DATA_DIR}")
    return path


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Rows of a JSONL file, gzipped or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


@lru_cache(maxsize=64)
def load_rows(name: str) -> tuple[dict[str, Any], ...]:
    """All rows of a bundled dataset (cached; treat as read-only)."""
    return tuple(iter_jsonl(data_path(name)))


def split_rows(rows: Sequence[T], *, test_size: int | float, seed: int = SPLIT_SEED) -> tuple[list[T], list[T]]:
    """Deterministic (train, test) split: shuffle by `seed`, then the first `test_size` rows are test.

    A float `test_size` is a fraction of the rows. Order inside each part follows the
    original file so that "the first N test tasks" stays stable when the file grows at its end.
    """
    n = len(rows)
    n_test = round(test_size * n) if isinstance(test_size, float) else int(test_size)
    if not 0 <= n_test <= n:
        raise ValueError(f"test_size {test_size} does not fit {n} rows")
    order = np.random.default_rng(seed).permutation(n)
    test_idx = set(order[:n_test].tolist())
    train = [r for i, r in enumerate(rows) if i not in test_idx]
    test = [r for i, r in enumerate(rows) if i in test_idx]
    return train, test


def normalise_text(text: str) -> str:
    """`text` lowercased with every run of whitespace collapsed to one space: what makes two
    questions "the same" for split disjointness (wording, punctuation and LaTeX still count)."""
    return " ".join(text.lower().split())


def drop_overlap(train: Sequence[T], test: Sequence[T], *, key: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """(kept, dropped): the train rows whose normalised `key` text no test row has, in order,
    and the ones it removed. Deterministic; the test side is left as it is."""
    asked = {normalise_text(key(row)) for row in test}
    kept: list[T] = []
    dropped: list[T] = []
    for row in train:
        (dropped if normalise_text(key(row)) in asked else kept).append(row)
    return kept, dropped
