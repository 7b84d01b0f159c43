"""English text analysis for our BM25, chosen to match Lucene's default English analyzer.

Anserini (pyserini's engine) lowercases, drops Lucene's 33 English stopwords and applies the
Porter stemmer. Doing the same here keeps bm25s rankings comparable with pyserini's. Tokens
are Unicode word runs, single characters included (Lucene keeps them too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from bm25s.stopwords import STOPWORDS_EN

LUCENE_STOPWORDS = frozenset(STOPWORDS_EN)
"""bm25s's English list is Lucene's ``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``."""

_WORD = re.compile(r"\w+", re.UNICODE)


@lru_cache(maxsize=1)
def _porter_stem() -> object:
    """PyStemmer's Porter stemmer when installed, else the identity (recorded in manifests)."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("porter")


class Analyzer:
    """Text to BM25 terms. Stemming results are cached, as the vocabulary repeats heavily."""

    def __init__(self, stem: bool = True) -> None:
        stemmer = _porter_stem() if stem else None
        self._stem_word = lru_cache(maxsize=1 << 20)(stemmer.stemWord) if stemmer is not None else None
        self.stemmer = "porter" if self._stem_word is not None else "none"

    def __call__(self, text: str) -> list[str]:
        words = [w for w in self.words(text) if w not in LUCENE_STOPWORDS]
        if self._stem_word is None:
            return words
        return [self._stem_word(w) for w in words]

    @staticmethod
    def words(text: str) -> list[str]:
        """The lowercased word runs of `text`, stopwords included."""
        return _WORD.findall(text.lower())

    def term(self, word: str) -> str | None:
        """The term one of `words` contributes, or None for a stopword: `__call__` word by word."""
        if word in LUCENE_STOPWORDS:
            return None
        return self._stem_word(word) if self._stem_word is not None else word

    def many(self, texts: Iterable[str]) -> list[list[str]]:
        return [self(text) for text in texts]
