"""Lucene BM25 through pyserini 1.6 (Anserini): the reference implementation of BM25.

Passages go into a Lucene index as JsonCollection documents ``{"id", "contents"}``, with
contents = ``'"Title"\\ntext'`` like Search-R1's wiki-18 index, analysed by Anserini's
default English analyzer (Porter stemmer, Lucene stopwords). Search uses
`LuceneSearcher.batch_search`, which spreads a batch over Java threads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from envs.retrieval.backends.base import BM25_B, BM25_K1, ProgressCallback, SearchHits
from envs.retrieval.backends.java import prepare_pyserini
from envs.retrieval.corpus import Corpus

_LUCENE_DIR = "lucene"
_BATCH = 10_000


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class PyseriniBackend:
    """A Lucene index searched with pyserini's `LuceneSearcher`."""

    name: ClassVar[str] = "pyserini"

    def __init__(self, searcher: Any, corpus: Corpus, threads: int) -> None:
        self._searcher = searcher
        self._corpus = corpus
        self.threads = threads
        searcher.set_bm25(BM25_K1, BM25_B)

    @classmethod
    def build(
        cls, corpus: Corpus, directory: Path, progress: ProgressCallback | None = None, threads: int | None = None
    ) -> PyseriniBackend:
        prepare_pyserini()
        from pyserini.index.lucene import LuceneIndexer

        threads = threads or default_threads()
        index_dir = directory / _LUCENE_DIR
        index_dir.mkdir(parents=True, exist_ok=True)
        indexer = LuceneIndexer(str(index_dir), threads=threads)
        total = len(corpus)
        for start in range(0, total, _BATCH):
            stop = min(start + _BATCH, total)
            indexer.add_batch_raw(
                [json.dumps({"id": corpus.ids[row], "contents": corpus.contents(row)}) for row in range(start, stop)]
            )
            if progress is not None:
                progress(stop, total)
        indexer.close()
        return cls.load(directory, corpus, threads=threads)

    @classmethod
    def load(cls, directory: Path, corpus: Corpus, threads: int | None = None) -> PyseriniBackend:
        prepare_pyserini()
        from pyserini.search.lucene import LuceneSearcher

        searcher = LuceneSearcher(str(directory / _LUCENE_DIR))
        if searcher.num_docs != len(corpus):
            raise ValueError(f"Lucene index in {directory} has {searcher.num_docs} passages, corpus has {len(corpus)}")
        return cls(searcher, corpus, threads or default_threads())

    @property
    def searcher(self) -> Any:
        """pyserini's `LuceneSearcher`, for callers that want its own API (e.g. benchmarks)."""
        return self._searcher

    def search(self, queries: Sequence[str], k: int) -> SearchHits:
        qids = [str(i) for i in range(len(queries))]
        results = self._searcher.batch_search(list(queries), qids, k=k, threads=self.threads)
        row_of_id = self._corpus.row_of_id
        rows = [[row_of_id(hit.docid) for hit in results.get(qid, [])] for qid in qids]
        scores = [[float(hit.score) for hit in results.get(qid, [])] for qid in qids]
        return SearchHits(rows, scores)

    def describe(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {
            "library": f"pyserini {version('pyserini')}",
            "method": "lucene-bm25",
            "k1": BM25_K1,
            "b": BM25_B,
            "analyzer": "anserini DefaultEnglishAnalyzer (porter, lucene stopwords)",
        }
