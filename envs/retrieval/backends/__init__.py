"""Search backends behind one protocol; each is imported only when asked for by name."""

from __future__ import annotations

import importlib

from envs.retrieval.backends.base import BM25_B, BM25_K1, ProgressCallback, SearchBackend, SearchHits

_BACKENDS: dict[str, str] = {
    "bm25s": "envs.retrieval.backends.bm25s_backend:BM25sBackend",
    "pyserini": "envs.retrieval.backends.pyserini_backend:PyseriniBackend",
    "dense": "envs.retrieval.backends.dense_backend:DenseBackend",
}
BACKEND_NAMES: tuple[str, ...] = tuple(_BACKENDS)
DEFAULT_BACKEND = "bm25s"


def backend_class(name: str) -> type[SearchBackend]:
    """The class of a backend by name, importing its (possibly heavy) module now."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown retrieval backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    module_name, _, class_name = _BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = [
    "BACKEND_NAMES",
    "BM25_B",
    "BM25_K1",
    "DEFAULT_BACKEND",
    "ProgressCallback",
    "SearchBackend",
    "SearchHits",
    "backend_class",
]
