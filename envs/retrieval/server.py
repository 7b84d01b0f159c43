"""The retrieval HTTP server: Search-R1's ``POST /retrieve`` plus ``GET /health``.

Search-R1's own clients work unchanged against it. It binds 127.0.0.1 unless told
otherwise, bounds every request (see `Limits`), answers bad input with a 4xx JSON error
``{"error": message}``, and runs searches in one worker thread so the event loop stays free
to accept and reject requests while a large batch is scored. Searches run one at a time in
arrival order: with the GIL, concurrent ones would only interleave and all finish late,
while in order a client that pipelines chunks of a batch gets each back as soon as it can.

Each request passes through two single-thread stages, search then reply encoding, like an
inference server that detokenises one step's output while the GPU runs the next. The search
thread hands its hits to the encoder thread and takes the next queued search at once, so the
searches of a pipelined batch run back to back, and a reply's encoding (about 10 ms for a
1,700-query batch at k=10, against about 90 ms of search) overlaps the next search's
scoring wherever the backend scores without holding the GIL, as bm25s's numba kernel does.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from envs.retrieval.searcher import LocalRetriever
from envs.retrieval.wire import BadRequest, Limits, RetrieveRequest, encode_json, parse_retrieve_request

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(encode_json(payload), status_code=status, media_type="application/json")


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("Content-Length header is not a number")
        if int(declared) > limit:
            raise BadRequest(f"request body is {declared} bytes; the limit is {limit}", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(retriever: LocalRetriever, limits: Limits | None = None) -> Starlette:
    """A Starlette app serving `retriever` with the given request limits."""
    limits = limits or Limits()
    searcher = ThreadPoolExecutor(1, thread_name_prefix="retrieval-search")
    encoder = ThreadPoolExecutor(1, thread_name_prefix="retrieval-encode")

    def search(request: RetrieveRequest) -> Future[bytes]:
        # Runs in the search thread, which hands the hits straight to the encoder thread and
        # takes the next queued search: this reply is encoded while the next one is scored.
        hits = retriever.search(request.queries, request.topk)
        return encoder.submit(retriever.encode_reply, hits, request.return_scores)

    async def retrieve(request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type.lower():
            return error_response(f"Content-Type must be application/json, not {content_type!r}", 415)
        try:
            parsed = parse_retrieve_request(await _read_body(request, limits.max_body_bytes), limits)
        except BadRequest as error:
            return error_response(str(error), error.status)
        try:
            encoding = await asyncio.get_running_loop().run_in_executor(searcher, search, parsed)
            body = await asyncio.wrap_future(encoding)
        except Exception as error:  # a backend failure must not take the server down
            log.exception("retrieval failed")
            return error_response(f"retrieval failed: {type(error).__name__}: {error}", 500)
        return Response(body, media_type="application/json")

    async def health(request: Request) -> Response:
        return json_response({**retriever.health(), "limits": limits.__dict__})

    async def http_error(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return error_response(f"{request.method} {request.url.path}: {error.detail}", error.status_code)

    async def server_error(request: Request, error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(f"internal error: {type(error).__name__}", 500)

    app = Starlette(
        routes=[Route("/retrieve", retrieve, methods=["POST"]), Route("/health", health, methods=["GET"])],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    weakref.finalize(app, searcher.shutdown, wait=False)
    weakref.finalize(app, encoder.shutdown, wait=False)
    return app


def uvicorn_config(
    app: Starlette, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "warning"
) -> uvicorn.Config:
    """Uvicorn settings shared by `serve` and the in-process background server."""
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off", timeout_keep_alive=30
    )


def serve(
    retriever: LocalRetriever,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    limits: Limits | None = None,
    log_level: str = "info",
) -> None:
    """Serve in the foreground until interrupted (what `espl-bench retriever serve` runs).

    The index and corpus live as long as the process, so they are moved out of the garbage
    collector's sight (`gc.freeze`) once loaded: a full collection then scans what requests
    allocate, not the whole index again.
    """
    retriever.warm_up()
    gc.collect()
    gc.freeze()
    uvicorn.Server(uvicorn_config(create_app(retriever, limits), host, port, log_level)).run()
