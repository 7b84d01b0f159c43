"""HTTP client of a Search-R1-style retrieval server, implementing the `Retriever` protocol.

One request carries every query of a batch of up to `chunk_size` queries. A larger batch
is split into requests of `chunk_size` queries with `pipeline` of them in flight at once,
so the server searches the next chunk while this process receives and decodes earlier ones
(and batches over the server's query limit still work). Three in flight rather than two: a
reply can reach this process a few milliseconds late (the server's event loop waits for the
GIL to send it), and with two the server would sometimes finish a search with nothing queued.
Connections are reused across calls.
A connection failure or a 5xx is retried a bounded number of times with exponential
backoff (at least the server's ``Retry-After``, at most `max_backoff`); a 4xx is the
caller's mistake and is raised at once with the server's message, except a 413 on a request
of several queries: it is split in halves until the server's size limits are met.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from envs.retrieval.transport import StdlibTransport, proxied
from envs.retrieval.types import Passage
from envs.retrieval.wire import decode_json, decode_passages, encode_json

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
        chunk_size: int = 256,
        pipeline: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        if self.url.endswith("/retrieve"):
            self.url = self.url[: -len("/retrieve")]
        self.retries = max(0, retries)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_query_chars = max_query_chars
        self.chunk_size = max(1, chunk_size)
        self.pipeline = max(1, pipeline)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        if transport is None and self.url.startswith("http://") and not proxied(self.url):
            transport = StdlibTransport()
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
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def _workers(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.pipeline, thread_name_prefix="retrieval-client")
            return self._pool

    def _request(self, method: str, path: str, body: bytes | None = None) -> bytes:
        last_problem = ""
        retry_after = 0.0
        for attempt in range(self.retries + 1):
            if attempt:
                _sleep(min(self.max_backoff, max(retry_after, self.backoff * 2 ** (attempt - 1))))
            try:
                response = self._http.request(method, f"{self.url}{path}", content=body)
            except httpx.TransportError as error:
                last_problem = f"{type(error).__name__}: {error}"
                continue
            if response.status_code in RETRYABLE_STATUS:
                last_problem = f"HTTP {response.status_code}: {_error_message(response)}"
                retry_after = _retry_after(response)
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
        """Top-`topk` passages per query (long queries are cut to the server limit)."""
        queries = [q[: self.max_query_chars] for q in queries]
        size = self.chunk_size
        if len(queries) <= size:
            return self._retrieve_chunk(queries, topk) if queries else []
        pool = self._workers()
        futures, start = [], 0
        for chunk in chunk_sizes(len(queries), size):
            futures.append(pool.submit(self._retrieve_chunk, queries[start : start + chunk], topk))
            start += chunk
        try:
            return [passages for future in futures for passages in future.result()]
        finally:
            for future in futures:
                future.cancel()

    def _retrieve_chunk(self, queries: list[str], topk: int) -> list[list[Passage]]:
        payload = {"queries": queries, "topk": int(topk), "return_scores": True}
        try:
            body = self._request("POST", "/retrieve", encode_json(payload))
        except RetrievalError as error:
            if error.status != 413 or len(queries) < 2:
                raise
            # Over the server's body or reply limit (a large topk): half the queries may fit.
            half = len(queries) // 2
            return self._retrieve_chunk(queries[:half], topk) + self._retrieve_chunk(queries[half:], topk)
        try:
            result = decode_passages(body)
        except ValueError as error:
            raise RetrievalError(f"retrieval server at {self.url} sent a malformed reply: {error}") from None
        if len(result) != len(queries):
            raise RetrievalError(
                f"retrieval server at {self.url} sent a malformed reply: {len(result)} results for {len(queries)} queries"
            )
        return result

    def health(self) -> dict[str, Any]:
        try:
            return decode_json(self._request("GET", "/health"))
        except ValueError as error:
            raise RetrievalError(f"retrieval server at {self.url} sent invalid JSON: {error}") from None


def chunk_sizes(total: int, size: int, last: int = 32) -> list[int]:
    """Request sizes for a batch of `total` queries: `size` each, with the final `last`
    queries in a request of their own when the remainder is over twice that. The server
    searches the next chunk while this process decodes a reply, except after the final one:
    that reply's transfer and decoding are paid in full, so it is kept small."""
    sizes = [size] * (total // size)
    if total % size:
        sizes.append(total % size)
    if len(sizes) > 1 and sizes[-1] > 2 * last:
        sizes[-1] -= last
        sizes.append(last)
    return sizes


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


def _retry_after(response: httpx.Response) -> float:
    """The server's ``Retry-After`` in seconds (0 when absent or given as a date)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", 0)))
    except ValueError:
        return 0.0


def _sleep(seconds: float) -> None:
    """The client's own back-off wait (a seam tests replace without touching `time.sleep`)."""
    time.sleep(seconds)
