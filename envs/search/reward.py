"""Search-QA scoring: SQuAD-normalised exact match, token F1, and answer recall of retrieval.

Normalisation is the SQuAD evaluation script's, which Search-R1 and the multi-hop QA papers
use, so our EM is comparable with theirs: lowercase, drop ASCII punctuation, drop the articles
a/an/the, collapse whitespace.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_CLOSED_CLASS = frozenset({"yes", "no", "noanswer"})


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, strip punctuation, drop a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0."""
    predicted = normalize_answer(prediction)
    return float(any(predicted == normalize_answer(gold) for gold in golds))


def _f1(prediction: str, gold: str) -> float:
    predicted, expected = normalize_answer(prediction), normalize_answer(gold)
    # HotpotQA's official rule: a yes/no answer earns no partial credit against anything else.
    if (predicted in _CLOSED_CLASS or expected in _CLOSED_CLASS) and predicted != expected:
        return 0.0
    predicted_tokens, expected_tokens = predicted.split(), expected.split()
    common = sum((Counter(predicted_tokens) & Counter(expected_tokens)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted_tokens)
    recall = common / len(expected_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, golds: Iterable[str]) -> float:
    """Token-level F1 of the normalised prediction, the best over all gold answers."""
    return max((_f1(prediction, gold) for gold in golds), default=0.0)


def answer_in_text(golds: Iterable[str], texts: Iterable[str]) -> bool:
    """Whether any normalised gold answer occurs in the normalised `texts` as whole words.

    Used to tell "the retriever never surfaced the answer" from "the agent missed it". The
    match is on word boundaries (``" no "`` is not found in ``"north"``), which keeps short
    answers such as yes/no or years from matching inside longer words.
    """
    haystack = f" {normalize_answer(' '.join(texts))} "
    return any(f" {needle} " in haystack for needle in map(normalize_answer, golds) if needle)
