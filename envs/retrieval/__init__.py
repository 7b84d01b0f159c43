"""Retrieval for search envs: corpora, index backends (bm25s, pyserini, dense), the
Search-R1-compatible HTTP server, its client, and an in-process retriever.

Only the light types are imported here; the heavier parts load from their modules on demand.
"""

from envs.retrieval.types import Passage, Retriever

__all__ = ["Passage", "Retriever"]
