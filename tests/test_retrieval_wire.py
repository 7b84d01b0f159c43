"""The /retrieve reply assembled from pre-encoded pieces is byte-for-byte the generic encoding."""

from __future__ import annotations

import json
import math

import pytest

from envs.retrieval import wire
from envs.retrieval.backends import SearchHits
from envs.retrieval.corpus import Corpus
from envs.retrieval.types import Passage
from envs.retrieval.wire import ReplyEncoder, decode_passages, encode_json, encode_scores

TRICKY = [
    ("plain", "Ed Wood", "Edward Davis Wood Jr. was an American filmmaker."),
    ("quotes", 'The "Big" One', 'He said "hi" and left \\ a backslash'),
    ("newlines", "Multi", "line one\nline two\r\n\tend"),
    ("unicode", "Zürich – Ελλάδα", "日本語のテキスト 🎬 and \u2028 line sep \u2029 para sep"),
    ("control", "Ctl\x01", "nul \x00 bell \x07 esc \x1b del \x7f"),
    ("empty", "", ""),
    ("id \"quoted\" é", "Title", "text"),
]
SCORES = [12.345678901234567, 0.0, 1e-07, 1e16, 3.0, 123456789.125, 2.5e-310]


def tricky_corpus() -> Corpus:
    corpus = Corpus()
    for doc_id, title, text in TRICKY:
        corpus.append(doc_id, title, text)
    return corpus


def tricky_hits() -> SearchHits:
    rows = [[0, 1, 2], [], [3, 4, 5, 6], [1], [6, 0, 3, 2, 5, 4, 1]]
    scores, position = [], 0
    for hits in rows:
        scores.append([SCORES[(position + i) % len(SCORES)] for i in range(len(hits))])
        position += len(hits)
    return SearchHits(rows, scores)


def generic_reply(corpus: Corpus, hits: SearchHits, return_scores: bool) -> dict:
    def document(row: int) -> dict[str, str]:
        return {"id": corpus.ids[row], "contents": corpus.contents(row)}

    if return_scores:
        return {"result": [[{"document": document(r), "score": s} for r, s in zip(rows, scores)]
                           for rows, scores in zip(hits.rows, hits.scores)]}
    return {"result": [[document(r) for r in rows] for rows in hits.rows]}


@pytest.mark.parametrize("return_scores", [True, False])
@pytest.mark.parametrize("cache_size", [1 << 10, 2])
def test_reply_bytes_equal_the_generic_encoding(return_scores: bool, cache_size: int) -> None:
    corpus, hits = tricky_corpus(), tricky_hits()
    encoder = ReplyEncoder(corpus, cache_size=cache_size)
    expected = encode_json(generic_reply(corpus, hits, return_scores))
    for _ in range(2):  # the second pass is served from the cache
        assert encoder.encode(hits, return_scores) == expected


@pytest.mark.parametrize("return_scores", [True, False])
def test_reply_bytes_equal_the_stdlib_json_encoding(monkeypatch: pytest.MonkeyPatch, return_scores: bool) -> None:
    """The same holds with the stdlib fallback codec used where msgspec is missing."""

    def stdlib(obj: object) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    monkeypatch.setattr(wire, "encode_json", stdlib)
    corpus, hits = tricky_corpus(), tricky_hits()
    assert ReplyEncoder(corpus).encode(hits, return_scores) == stdlib(generic_reply(corpus, hits, return_scores))


@pytest.mark.parametrize("rows", [[], [[]], [[], []]])
def test_empty_replies(rows: list[list[int]]) -> None:
    corpus, hits = tricky_corpus(), SearchHits(rows, [[] for _ in rows])
    for return_scores in (True, False):
        assert ReplyEncoder(corpus).encode(hits, return_scores) == encode_json(generic_reply(corpus, hits, return_scores))


def test_scores_are_encoded_like_the_reply_encoder_writes_them() -> None:
    scores = [[1.5, -2.25, 0.1], [], [1e300, 7.0], [math.inf, math.nan, 3]]
    flat = [s for row in scores for s in row]
    assert encode_scores(scores) == [encode_json(s) for s in flat]
    assert encode_scores([[], []]) == []


def test_decoded_passages_are_the_corpus_passages() -> None:
    corpus, hits = tricky_corpus(), tricky_hits()
    decoded = decode_passages(ReplyEncoder(corpus).encode(hits, True))
    assert decoded == [
        [Passage(corpus.ids[r], corpus.titles[r], corpus.texts[r], s) for r, s in zip(rows, scores)]
        for rows, scores in zip(hits.rows, hits.scores)
    ]


@pytest.mark.parametrize("body", [b"{}", b'{"result": [[{"doc": {}}]]}', b'{"result": [[{"document": {"id": 1}}]]}',
                                  b"not json", b'{"result": 3}'])
def test_malformed_replies_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_passages(body)


def test_the_largest_document_is_found_exactly() -> None:
    corpus = tricky_corpus()
    corpus.append("long-plain", "T", "a" * 300)  # the longest text, but not the largest JSON
    corpus.append("short-escaped", "\x01", "\x02" * 60)  # 6 bytes a character in JSON
    largest = max(len(encode_json({"id": corpus.ids[r], "contents": corpus.contents(r)})) for r in range(len(corpus)))
    assert ReplyEncoder(corpus).max_document_bytes() == largest == len(ReplyEncoder(corpus).document(len(corpus) - 1))


@pytest.mark.parametrize("return_scores", [True, False])
@pytest.mark.parametrize("score", [-2.2250738585072014e-308, 1.7976931348623157e308, None, 0.1])
def test_no_reply_exceeds_its_bound(return_scores: bool, score: float | None) -> None:
    corpus = tricky_corpus()
    corpus.append("short-escaped", "\x01", "\x02" * 60)
    encoder = ReplyEncoder(corpus)
    worst = len(corpus) - 1
    for queries, topk in [(1, 1), (3, 5), (4, 7)]:
        hits = SearchHits(rows=[[worst] * topk] * queries, scores=[[score] * topk] * queries)
        size = len(encoder.encode(hits, return_scores))
        assert size <= wire.reply_bound(queries, topk, encoder.max_document_bytes()) < size + 50 * queries * topk + 16
