"""BM25 with the `bm25s` library: the default backend (pure Python + numpy, no JVM).

Scoring is Lucene's BM25 (k1=0.9, b=0.4) over the terms of `Analyzer`, so rankings line up
with pyserini's. Retrieval uses bm25s's numba engine when numba is importable (tens of
thousands of queries per second after a one-off JIT compile) and its numpy engine otherwise.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from envs.retrieval.backends.analyzer import Analyzer
from envs.retrieval.backends.base import BM25_B, BM25_K1, ProgressCallback, SearchHits
from envs.retrieval.corpus import Corpus

ENGINE_ENV = "ESPL_BM25S_ENGINE"
"""Set to ``numba`` or ``numpy`` to force a bm25s engine (default: numba when importable)."""
_SETTINGS_FILE = "analyzer.json"
_TOKENIZE_CHUNK = 5_000
_WORD_CACHE_SIZE = 1 << 20

# numba's parallel kernels abort if two threads launch them at once; one lock per process.
_SEARCH_LOCK = threading.Lock()


def enable_numba_cache() -> None:
    """Let numba cache bm25s's compiled kernels on disk: the first process pays the
    compile (seconds to tens of seconds on 2 cores), later ones load it in about a second.
    Best effort; without it numba simply compiles again."""
    try:
        from numba.core.registry import CPUDispatcher

        import bm25s.numba.retrieve_utils as retrieve_utils
        import bm25s.numba.selection as selection
    except ImportError:
        return
    for module in (retrieve_utils, selection):
        for kernel in vars(module).values():
            if isinstance(kernel, CPUDispatcher):
                try:
                    kernel.enable_caching()
                except Exception:  # a read-only install: numba compiles in memory as usual
                    pass


def default_engine() -> str:
    forced = os.environ.get(ENGINE_ENV, "").strip().lower()
    if forced in ("numba", "numpy"):
        return forced
    if forced:
        raise ValueError(f"{ENGINE_ENV} must be 'numba' or 'numpy', not {forced!r}")
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numpy"
    return "numba"


class BM25sBackend:
    """A bm25s index plus the analyzer settings it was built with."""

    name: ClassVar[str] = "bm25s"

    def __init__(self, model: Any, analyzer: Analyzer, num_docs: int, engine: str) -> None:
        self._model = model
        self._analyzer = analyzer
        self._vocab: dict[str, int] = model.vocab_dict
        self._word_ids: dict[str, int] = {}
        self.num_docs = num_docs
        self.engine = engine

    @classmethod
    def build(
        cls, corpus: Corpus, directory: Path, progress: ProgressCallback | None = None, engine: str | None = None
    ) -> BM25sBackend:
        import bm25s

        analyzer = Analyzer()
        vocab: dict[str, int] = {}
        doc_ids: list[list[int]] = []
        total = len(corpus)
        for start in range(0, total, _TOKENIZE_CHUNK):
            stop = min(start + _TOKENIZE_CHUNK, total)
            for row in range(start, stop):
                terms = analyzer(f"{corpus.titles[row]} {corpus.texts[row]}")
                doc_ids.append([vocab.setdefault(term, len(vocab)) for term in terms])
            if progress is not None:
                progress(stop, total)
        model = bm25s.BM25(k1=BM25_K1, b=BM25_B, method="lucene", backend=engine or default_engine())
        model.index((doc_ids, vocab), show_progress=False)
        directory.mkdir(parents=True, exist_ok=True)
        model.save(str(directory))
        (directory / _SETTINGS_FILE).write_text(json.dumps({"stemmer": analyzer.stemmer, "stopwords": "lucene"}))
        return cls(model, analyzer, total, model.backend)

    @classmethod
    def load(cls, directory: Path, corpus: Corpus, engine: str | None = None) -> BM25sBackend:
        import bm25s

        settings = json.loads((directory / _SETTINGS_FILE).read_text())
        analyzer = Analyzer(stem=settings["stemmer"] != "none")
        if analyzer.stemmer != settings["stemmer"]:
            raise RuntimeError(
                f"index {directory} was built with the {settings['stemmer']!r} stemmer, which needs PyStemmer"
            )
        engine = engine or default_engine()
        if engine == "numba":
            enable_numba_cache()
        model = bm25s.BM25.load(str(directory), mmap=False, show_progress=False, backend=engine)
        if model.scores["num_docs"] != len(corpus):
            raise ValueError(f"index {directory} has {model.scores['num_docs']} passages, corpus has {len(corpus)}")
        return cls(model, analyzer, len(corpus), engine)

    def query_term_ids(self, query: str) -> list[int]:
        """The index's term ids for `query`, through a cache from each surface word to its id
        (-1 for a stopword or a term not in the index): one dict lookup per word instead of a
        stopword test, a stem and a vocabulary lookup, as query words repeat heavily."""
        ids = []
        known = self._word_ids
        for word in self._analyzer.words(query):
            term_id = known.get(word)
            if term_id is None:
                term_id = self._word_id(word)
            if term_id >= 0:
                ids.append(term_id)
        return ids

    def _word_id(self, word: str) -> int:
        term = self._analyzer.term(word)
        term_id = -1 if term is None else self._vocab.get(term, -1)
        if len(self._word_ids) >= _WORD_CACHE_SIZE:
            self._word_ids.clear()
        self._word_ids[word] = term_id
        return term_id

    def search(self, queries: Sequence[str], k: int) -> SearchHits:
        k = max(1, min(k, self.num_docs))
        term_ids = [self.query_term_ids(q) for q in queries]
        answerable = [i for i, ids in enumerate(term_ids) if ids]
        rows: list[list[int]] = [[] for _ in queries]
        scores: list[list[float]] = [[] for _ in queries]
        if not answerable:
            return SearchHits(rows, scores)
        with _SEARCH_LOCK:
            found, found_scores = self._model.retrieve(
                [term_ids[i] for i in answerable], k=k, show_progress=False, n_threads=0
            )
        found_rows = np.asarray(found).tolist()
        found_scores = np.asarray(found_scores, dtype=np.float64)
        # Like Lucene, only passages that contain a query term count as hits: a row's zero
        # scores (fewer matching passages than k) are its tail, since rows are sorted.
        matched = np.count_nonzero(found_scores > 0, axis=1).tolist()
        score_rows = found_scores.tolist()
        for slot, query_index in enumerate(answerable):
            count = matched[slot]
            rows[query_index] = found_rows[slot][:count] if count < k else found_rows[slot]
            scores[query_index] = score_rows[slot][:count] if count < k else score_rows[slot]
        return SearchHits(rows, scores)

    def warm_up(self) -> None:
        """Compile numba kernels now rather than on the first request."""
        if self._vocab:
            self.search([next(iter(self._vocab))], 1)

    def describe(self) -> dict[str, Any]:
        import bm25s

        return {
            "library": f"bm25s {bm25s.__version__}",
            "method": "lucene",
            "k1": BM25_K1,
            "b": BM25_B,
            "stemmer": self._analyzer.stemmer,
            "stopwords": "lucene-english-33",
        }
