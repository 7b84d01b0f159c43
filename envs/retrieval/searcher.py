"""In-process retrieval: an opened index answering the `Retriever` protocol directly.

The HTTP server wraps one of these, tests and benchmarks call it without a socket, and
`builtin(...)` opens (building once, then caching) an index over the bundled corpus.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from envs.retrieval.backends import DEFAULT_BACKEND, SearchHits
from envs.retrieval.corpus import BUILTIN, file_sha256
from envs.retrieval.index import MANIFEST_FILE, OpenIndex, build_index, open_index
from envs.retrieval.types import Passage
from envs.retrieval.wire import ReplyEncoder, reply_bound

CACHE_ENV = "ESPL_BENCH_CACHE"


def cache_root() -> Path:
    """Where built indexes are cached: ``$ESPL_BENCH_CACHE`` or ``~/.cache/espl-bench``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "espl-bench"


def builtin_index_dir(backend: str = DEFAULT_BACKEND) -> Path:
    """The cache folder of the bundled corpus's index; its name changes when the corpus does."""
    return cache_root() / "indexes" / f"builtin-{backend}-{file_sha256(BUILTIN)[:12]}"


def open_builtin_index(backend: str = DEFAULT_BACKEND) -> OpenIndex:
    """Open the cached index of the bundled corpus, building it first if needed.

    A file lock makes concurrent processes wait for one builder instead of all building.
    """
    directory = builtin_index_dir(backend)
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / MANIFEST_FILE).is_file():
            return build_index(BUILTIN, directory, backend, overwrite=True)
    return open_index(directory)


class LocalRetriever:
    """A `Retriever` that searches an opened index in this process."""

    def __init__(self, index: OpenIndex) -> None:
        self.index = index
        self.backend = index.backend
        self.corpus = index.corpus
        self._reply = ReplyEncoder(index.corpus)

    @classmethod
    def from_index_dir(cls, index_dir: str | Path, corpus_path: str | Path | None = None) -> LocalRetriever:
        return cls(open_index(index_dir, corpus_path=corpus_path))

    @classmethod
    def builtin(cls, backend: str = DEFAULT_BACKEND) -> LocalRetriever:
        return cls(open_builtin_index(backend))

    def search(self, queries: Sequence[str], topk: int) -> SearchHits:
        return self.backend.search(list(queries), topk)

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        hits = self.search(queries, topk)
        ids, titles, texts = self.corpus.ids, self.corpus.titles, self.corpus.texts
        return [
            [Passage(ids[r], titles[r], texts[r], s) for r, s in zip(rows, scores)]
            for rows, scores in zip(hits.rows, hits.scores)
        ]

    def encode_reply(self, hits: SearchHits, return_scores: bool) -> bytes:
        """The body of Search-R1's /retrieve reply for hits that `search` found."""
        return self._reply.encode(hits, return_scores)

    def reply_bound(self, queries: int, topk: int) -> int:
        """The most bytes `encode_reply` can return for `queries` queries at `topk`: what the
        server checks against its reply limit before searching."""
        return reply_bound(queries, topk, self._reply.max_document_bytes())

    def warm_up(self) -> None:
        """Pay one-off costs (JIT compiles, lazy loads) now rather than on the first request."""
        warm = getattr(self.backend, "warm_up", None)
        if warm is not None:
            warm()
        else:
            self.search(["warm up"], 1)

    def health(self) -> dict[str, Any]:
        manifest = self.index.manifest
        return {
            "status": "ok",
            "backend": manifest["backend"],
            "corpus_size": len(self.corpus),
            "corpus": manifest["corpus"]["path"],
            "index_version": self.index.version,
            "params": manifest["params"],
            "max_document_bytes": self._reply.max_document_bytes(),
        }
