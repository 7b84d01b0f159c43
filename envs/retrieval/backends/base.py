"""The search-backend protocol: what the server needs from bm25s, Lucene or a dense index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from envs.retrieval.corpus import Corpus

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: how far an index build is, in passages."""

BM25_K1 = 0.9
BM25_B = 0.4
"""Lucene/Anserini's default BM25 parameters; bm25s uses the same, with Lucene's IDF."""


@dataclass
class SearchHits:
    """Per query, corpus row numbers and scores, best first (possibly fewer than k)."""

    rows: list[list[int]]
    scores: list[list[float]]

    def __len__(self) -> int:
        return len(self.rows)


class SearchBackend(Protocol):
    """A searchable index over one corpus, addressed by corpus row numbers.

    `search` may be called from several threads at once (the server's worker threads); a
    backend whose library cannot take that serialises its calls internally.
    """

    name: ClassVar[str]

    @classmethod
    def build(cls, corpus: Corpus, directory: Path, progress: ProgressCallback | None = None) -> SearchBackend:
        """Index `corpus`, write the index files under `directory`, and return a ready backend."""
        ...

    @classmethod
    def load(cls, directory: Path, corpus: Corpus) -> SearchBackend:
        """Open an index that `build` wrote for this same corpus."""
        ...

    def search(self, queries: Sequence[str], k: int) -> SearchHits:
        """The top `k` corpus rows of each query; a query with no match gets an empty list."""
        ...

    def describe(self) -> dict[str, Any]:
        """Parameters and library versions, recorded in the index manifest."""
        ...
