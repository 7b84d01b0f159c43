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


MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask for, and what the server holds for all requests at once.

    A request over a per-request limit gets a 4xx; one that finds the shared caps full gets
    a 503 with ``Retry-After``; a connection that stalls is closed. Together they bound the
    memory and time a slow or hostile client can take: without them, 8 clients asking for
    4096 queries x topk 100 and never reading held 2.8 GB of replies.
    """

    max_topk: int = 100
    max_queries: int = 4096
    max_query_chars: int = 4096
    max_body_bytes: int = 8 * MiB
    max_reply_bytes: int = 64 * MiB
    """Refused up front (413) when queries x topk x the corpus's largest passage could exceed it."""
    max_requests: int = 64
    """Requests worked on at once once their body is in (queued, searching, sending); beyond it a 503."""
    max_pending_bytes: int = 256 * MiB
    """Request bodies, reply bounds and unsent replies of all requests together; beyond it a 503."""
    max_connections: int = 512
    """Open connections; a connection beyond it gets a 503 and is closed at once."""
    retry_after_s: int = 1
    header_timeout_s: float = 10.0
    """A request's headers must arrive within this many seconds of its first byte (or of connecting)."""
    body_timeout_s: float = 30.0
    """Its body must arrive within this many seconds of its headers."""
    write_timeout_s: float = 30.0
    """A connection whose reply does not move for this long (the client stopped reading) is cut."""
    keep_alive_s: float = 30.0
    """An idle kept-alive connection is closed after this long."""

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value}")
        if self.max_pending_bytes < self.max_body_bytes + self.max_reply_bytes:
            raise ValueError(
                f"max_pending_bytes ({self.max_pending_bytes}) must hold one largest request: "
                f"max_body_bytes + max_reply_bytes = {self.max_body_bytes + self.max_reply_bytes}"
            )


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


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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
    except ValueError as error:
        # A number with more digits than Python converts to int (4,300 by default): a client's
        # mistake like any other, so a 400 rather than the 500 an uncaught ValueError became.
        raise BadRequest(f"request body has a number that is too long: {_short(str(error))}") from None
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
_DOCUMENT_KEYS = len(b'{"id":"","contents":""}')
_CONTENTS_MARKS = 3
"""The quotes around the title and the newline after it, which `Corpus.contents` adds."""
_SCORE_BYTES = 24
"""The longest float JSON text, e.g. ``-2.2250738585072014e-308`` (``null`` when missing)."""
_HIT_PUNCTUATION = 2
_QUERY_PUNCTUATION = 3
_REPLY_FRAME = len(b'{"result":[]}')
_JSON_BYTES_PER_CHAR = 6
"""The most a character can take in JSON text: a control character escaped as ``\\u00XX``."""


def reply_bound(queries: int, topk: int, max_document_bytes: int) -> int:
    """The most bytes a /retrieve reply to `queries` queries at `topk` can take, with or
    without scores, when no passage's ``{"id","contents"}`` JSON exceeds `max_document_bytes`."""
    hit = len(_SCORED_OPEN) + max_document_bytes + len(_SCORE_KEY) + _SCORE_BYTES + _HIT_PUNCTUATION
    return _REPLY_FRAME + queries * (_QUERY_PUNCTUATION + topk * hit)


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
        self._max_document_bytes: int | None = None

    def max_document_bytes(self) -> int:
        """The size of the corpus's largest ``{"id","contents"}`` JSON, exactly (computed once).

        A passage's JSON takes at most 6 bytes per character, so only passages whose length
        times 6 could beat the largest found so far are encoded: 10 ms for the bundled corpus,
        whose longest passages are far longer than most. On a corpus of like-sized passages
        (wiki-18) most are encoded, about 1 us each, once when the server starts.
        """
        if self._max_document_bytes is None:
            corpus = self._corpus
            lengths = [len(i) + len(t) + len(x) for i, t, x in zip(corpus.ids, corpus.titles, corpus.texts)]
            longest = max(range(len(lengths)), key=lengths.__getitem__, default=None)
            largest = 0 if longest is None else len(self._encode_document(longest))
            for row, length in enumerate(lengths):
                if _DOCUMENT_KEYS + _JSON_BYTES_PER_CHAR * (length + _CONTENTS_MARKS) > largest:
                    largest = max(largest, len(self._encode_document(row)))
            self._max_document_bytes = largest
        return self._max_document_bytes

    def _encode_document(self, row: int) -> bytes:
        corpus = self._corpus
        return encode_json({"id": corpus.ids[row], "contents": corpus.contents(row)})

    def _encode_prefix(self, row: int) -> bytes:
        return _SCORED_OPEN + self._encode_document(row) + _SCORE_KEY

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
