"""HTTP client of a Search-R1-style retrieval server, implementing the `Retriever` protocol.

One request carries every query of a batch. The connection is reused across calls. A
connection failure or a 5xx is retried a bounded number of times with exponential backoff;
a 4xx is the caller's mistake and is raised at once with the server's message.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import httpx

from envs.retrieval.types import Passage
from envs.retrieval.wire import decode_json, decode_scored_reply, encode_json

RETRYABLE_STATUS = frozenset({500, 502, 503, 504})


class RetrievalError(RuntimeError):
    """The server answered, but with an error (bad request, failed search, malformed reply)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetrievalUnavailable(RetrievalError):
    """No retrieval server could be reached at the configured URL."""


class RetrievalClient:
    """`retrieve(queries, topk)` over HTTP against ``POST {url}/retrieve``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_backoff: float = 4.0,
        max_query_chars: int = 4096,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith("/retrieve"):
            self.url = self.url[: -len("/retrieve")]
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_query_chars = max_query_chars
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_keepalive_connections=8, max_connections=32),
            headers={"content-type": "application/json", "accept": "application/json"},
            transport=transport,
        )

    def __enter__(self) -> RetrievalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        last_problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                _sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                response = self._http.request(method, f"{self.url}{path}", content=body)
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}: {_error_message(response)}"
                continue
            if response.status_code >= 400:
                raise RetrievalError(
                    f"retrieval server at {self.url} rejected {method} {path} "
                    f"(HTTP {response.status_code}): {_error_message(response)}",
                    response.status_code,
                )
            return response.content
        attempts = self.retries + 1
        if last_problem.startswith("HTTP"):
            raise RetrievalError(f"retrieval server at {self.url} failed {attempts} times; last: {last_problem}")
        raise RetrievalUnavailable(
            f"no retrieval server reachable at {self.url} after {attempts} attempts ({last_problem}). "
            "Start one with `espl-bench retriever serve --index DIR`, or leave the URL unset to use "
            "the built-in local server."
        )

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        """Top-`topk` passages per query, in one request (long queries are cut to the server limit)."""
        if not queries:
            return []
        payload = {
            "queries": [q[: self.max_query_chars] for q in queries],
            "topk": int(topk),
            "return_scores": True,
        }
        body = self._request("POST", "/retrieve", encode_json(payload))
        try:
            result = decode_scored_reply(body)
        except ValueError as error:
            raise RetrievalError(f"retrieval server at {self.url} sent a malformed reply: {error}") from None
        if len(result) != len(queries):
            raise RetrievalError(
                f"retrieval server at {self.url} sent a malformed reply: {len(result)} results for {len(queries)} queries"
            )
        return [[_passage(doc_id, contents, score) for doc_id, contents, score in hits] for hits in result]

    def health(self) -> dict[str, Any]:
        try:
            return decode_json(self._request("GET", "/health"))
        except ValueError as error:
            raise RetrievalError(f"retrieval server at {self.url} sent invalid JSON: {error}") from None


def _passage(doc_id: str, contents: str, score: float | None) -> Passage:
    """Search-R1's contents, split like `Passage.from_document`: first line is the quoted title."""
    title, _, text = contents.partition("\n")
    return Passage(doc_id, title.strip().strip('"'), text, score)


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(payload, dict) and "error" in payload:
        return str(payload["error"])
    if isinstance(payload, dict) and "detail" in payload:
        return str(payload["detail"])
    return response.text[:200]


def _sleep(seconds: float) -> None:
    """The client's own back-off wait (a seam tests replace without touching `time.sleep`)."""
    time.sleep(seconds)
