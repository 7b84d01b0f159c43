"""Search-R1's retrieval API on the wire: request validation and response bodies.

Request: ``{"queries": [str, ...], "topk": int, "return_scores": bool}``. Response:
``{"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}`` when
``return_scores`` is true, and ``{"result": [[{"id", "contents"}, ...], ...]}`` (bare
documents) when it is false, exactly as Search-R1's own server answers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from typing import Any

import msgspec

from envs.retrieval.backends import SearchHits
from envs.retrieval.corpus import Corpus
from envs.retrieval.types import Passage

# A fast codec matters: a 1,700-query batch at k=10 answers with ~12 MB of JSON.
_ENCODER = msgspec.json.Encoder()


# gc=False: tens of thousands of these per reply would otherwise trigger collections.
class _Document(msgspec.Struct, gc=False):
    id: str
    contents: str


class _Scored(msgspec.Struct, gc=False):
    document: _Document
    score: float | None = None


class _Reply(msgspec.Struct, gc=False):
    result: list[list[_Scored]]


_REPLY_DECODER = msgspec.json.Decoder(_Reply)


def encode_json(obj: Any) -> bytes:
    return _ENCODER.encode(obj)


def decode_json(data: bytes) -> Any:
    return msgspec.json.decode(data)


def decode_passages(data: bytes) -> list[list[Passage]]:
    """The passages of a ``return_scores`` reply, best first per query; ValueError if malformed."""
    make = Passage.from_contents
    return [
        [make(hit.document.id, hit.document.contents, hit.score) for hit in hits]
        for hits in _REPLY_DECODER.decode(data).result
    ]


DEFAULT_TOPK = 3
"""Search-R1's default when a request leaves out ``topk``."""
REQUEST_FIELDS = frozenset({"queries", "topk", "return_scores"})


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; larger requests get a 4xx rather than a slow server."""

    max_topk: int = 100
    max_queries: int = 4096
    max_query_chars: int = 4096
    max_body_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class RetrieveRequest:
    queries: list[str]
    topk: int
    return_scores: bool


class BadRequest(ValueError):
    """A request the server refuses, with the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def parse_retrieve_request(body: bytes, limits: Limits) -> RetrieveRequest:
    """Validate a /retrieve body; every problem becomes a `BadRequest` naming the field."""
    if len(body) > limits.max_body_bytes:
        raise BadRequest(f"request body is {len(body)} bytes; the limit is {limits.max_body_bytes}", 413)
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise BadRequest(f"request body is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise BadRequest(f"request body must be a JSON object, not {_json_type(payload)}")
    unknown = sorted(set(payload) - REQUEST_FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}; allowed: {sorted(REQUEST_FIELDS)}")
    if "queries" not in payload:
        raise BadRequest("missing field 'queries' (a list of strings)")
    queries = payload["queries"]
    if not isinstance(queries, list):
        raise BadRequest(f"'queries' must be a list of strings, not {_json_type(queries)}")
    if not queries:
        raise BadRequest("'queries' is empty; send at least one query")
    if len(queries) > limits.max_queries:
        raise BadRequest(f"{len(queries)} queries in one request; the limit is {limits.max_queries}", 413)
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise BadRequest(f"queries[{i}] must be a string, not {_json_type(query)}")
        if not query.strip():
            raise BadRequest(f"queries[{i}] is empty or blank")
        if len(query) > limits.max_query_chars:
            raise BadRequest(f"queries[{i}] has {len(query)} characters; the limit is {limits.max_query_chars}", 413)
    topk = payload.get("topk")
    if topk is None:
        topk = DEFAULT_TOPK
    elif isinstance(topk, bool) or not isinstance(topk, int):
        raise BadRequest(f"'topk' must be an integer, not {_json_type(topk)}")
    elif not 1 <= topk <= limits.max_topk:
        raise BadRequest(f"'topk' must be between 1 and {limits.max_topk}, got {topk}")
    return_scores = payload.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest(f"'return_scores' must be true or false, not {_json_type(return_scores)}")
    return RetrieveRequest(queries=queries, topk=topk, return_scores=return_scores)


_SCORED_OPEN = b'{"document":'
_SCORE_KEY = b',"score":'


def encode_scores(scores: list[list[float]]) -> list[bytes]:
    """Each score's JSON text, in order, as `encode_json` writes it inside a reply.

    One encoder call for all scores (split at the commas) instead of one per hit.
    """
    flat = [score for row in scores for score in row]
    if not flat:
        return []
    pieces = encode_json(flat)[1:-1].split(b",")
    if len(pieces) != len(flat):  # a score that is not a plain number
        pieces = [encode_json(score) for score in flat]
    return pieces


class ReplyEncoder:
    """The bytes of a /retrieve reply, equal to `encode_json` of the whole reply but assembled
    by joining pre-encoded pieces, so a 1,700-query k=10 reply does not build 35,000 dicts.

    Each passage's ``{"document":{"id":..,"contents":..},"score":`` prefix is encoded once and
    kept in a bounded cache, since the same passages come back across queries and requests.
    The reply is one `bytes.join` over hit pieces and the punctuation between them, laid out
    with slice assignment: no Python-level step per hit, only per query.
    """

    def __init__(self, corpus: Corpus, cache_size: int = 1 << 18) -> None:
        self._corpus = corpus
        self.prefix = lru_cache(maxsize=cache_size)(self._encode_prefix)

    def _encode_prefix(self, row: int) -> bytes:
        corpus = self._corpus
        document = encode_json({"id": corpus.ids[row], "contents": corpus.contents(row)})
        return _SCORED_OPEN + document + _SCORE_KEY

    def document(self, row: int) -> bytes:
        """``{"id":..,"contents":..}`` of one passage."""
        return self.prefix(row)[len(_SCORED_OPEN) : -len(_SCORE_KEY)]

    def encode(self, hits: SearchHits, return_scores: bool) -> bytes:
        rows = list(chain.from_iterable(hits.rows))
        if return_scores:
            # hit: prefix, score; the "}" closing each hit starts the punctuation after it.
            parts: list[bytes] = [b""] * (3 * len(rows) + 1)
            parts[0::3] = _punctuation(hits.rows, b"},", b"}]")
            parts[1::3] = map(self.prefix, rows)
            parts[2::3] = encode_scores(hits.scores)
        else:
            parts = [b""] * (2 * len(rows) + 1)
            parts[0::2] = _punctuation(hits.rows, b",", b"]")
            parts[1::2] = map(self.document, rows)
        return b"".join(parts)


def _punctuation(rows_per_query: list[list[int]], inside: bytes, row_end: bytes) -> list[bytes]:
    """The text before each hit and after the last one (one more item than there are hits):
    ``{"result":[``, then `inside` between hits of a query, `row_end` + ``,[`` between queries
    (with any empty queries' ``[]`` in it), and ``]}`` at the very end."""
    between: list[bytes] = []
    pending = b'{"result":['
    longest = max(map(len, rows_per_query), default=0)
    insides = [inside] * max(0, longest - 1)
    for position, rows in enumerate(rows_per_query):
        if position:
            pending += b","
        if not rows:
            pending += b"[]"
            continue
        between.append(pending + b"[")
        between += insides[: len(rows) - 1]
        pending = row_end
    between.append(pending + b"]}")
    return between
