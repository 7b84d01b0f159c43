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

What one client can cost is bounded (see `Limits`): a request whose reply could pass
`Limits.max_reply_bytes` is refused before any search (413); requests and the bytes they
hold are capped together (`envs.retrieval.admission`, 503 with ``Retry-After``); a reply's
bytes stay counted until they have left (`ReplyResponse`); and the connection deadlines
uvicorn lacks (slow headers, slow bodies, replies nobody reads) live in
`envs.retrieval.deadlines`. The server has no authentication, hence the warning when it is
bound to anything but loopback.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import ipaddress
import logging
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.config import LOGGING_CONFIG

from envs.retrieval.admission import Admission, Busy, Ticket
from envs.retrieval.deadlines import guarded_protocol
from envs.retrieval.searcher import LocalRetriever
from envs.retrieval.wire import BadRequest, Limits, RetrieveRequest, encode_json, parse_retrieve_request

log = logging.getLogger(__name__)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(encode_json(payload), status_code=status, media_type="application/json")


def error_response(message: str, status: int, retry_after_s: int | None = None) -> Response:
    response = json_response({"error": message}, status)
    if retry_after_s is not None:
        response.headers["retry-after"] = str(retry_after_s)
    return response


class ReplyResponse(Response):
    """A /retrieve reply whose ticket is released only once the reply has (nearly all) left.

    The body goes to the connection in one write, as any response's would, and then an
    empty last message follows: uvicorn waits for a paused connection to drain before it
    sends anything, so that message returns once the transport's buffer is below its
    low-water mark. A reply its client does not read thus holds its ticket (its bytes stay
    counted) until the write timeout cuts the connection. Chunks would do the same at the
    cost of a wake-up of this task per chunk; one write keeps the usual path as it was.
    """

    media_type = "application/json"

    def __init__(self, body: bytes, ticket: Ticket) -> None:
        super().__init__(body)
        self.ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": self.body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.ticket.release()


async def _read_body(request: Request, limit: int, ticket: Ticket) -> bytes:
    """The request body, refusing (413) as soon as it grows past `limit` bytes; the ticket
    holds its bytes as they arrive."""
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
        ticket.hold(size)
        chunks.append(chunk)
    return b"".join(chunks)


def failure_response(request: Request, error: Exception) -> Response:
    """The reply to a /retrieve request that failed with `error`."""
    if isinstance(error, Busy):
        return error_response(str(error), error.status, error.retry_after_s)
    if isinstance(error, BadRequest):
        return error_response(str(error), error.status)
    if isinstance(error, ClientDisconnect):  # an everyday event, not a server fault: one line
        log.debug("client %s disconnected before its request body was complete", _client(request))
        return Response(status_code=400)  # nobody is left to read it
    log.exception("retrieval failed")  # a backend failure must not take the server down
    return error_response(f"retrieval failed: {type(error).__name__}: {error}", 500)


def create_app(retriever: LocalRetriever, limits: Limits | None = None) -> Starlette:
    """A Starlette app serving `retriever` with the given request limits."""
    limits = limits or Limits()
    retriever.reply_bound(1, 1)  # sizes the corpus's largest passage now, not in a request
    searcher = ThreadPoolExecutor(1, thread_name_prefix="retrieval-search")
    encoder = ThreadPoolExecutor(1, thread_name_prefix="retrieval-encode")
    admission = Admission(limits.max_requests, limits.max_pending_bytes, limits.retry_after_s)

    def search(request: RetrieveRequest) -> Future[bytes]:
        # Runs in the search thread, which hands the hits straight to the encoder thread and
        # takes the next queued search: this reply is encoded while the next one is scored.
        hits = retriever.search(request.queries, request.topk)
        return encoder.submit(retriever.encode_reply, hits, request.return_scores)

    async def reply_body(request: Request, ticket: Ticket) -> bytes:
        body = await _read_body(request, limits.max_body_bytes, ticket)
        parsed = parse_retrieve_request(body, limits)
        bound = retriever.reply_bound(len(parsed.queries), parsed.topk)
        if bound > limits.max_reply_bytes:
            raise BadRequest(
                f"a reply to {len(parsed.queries)} queries at topk {parsed.topk} could take {bound:,} bytes; the "
                f"limit is {limits.max_reply_bytes:,}: send fewer queries per request or a smaller topk", 413)
        ticket.admit()
        ticket.hold(len(body) + bound)  # the queries stay alive while the reply is built
        encoding = await asyncio.get_running_loop().run_in_executor(searcher, search, parsed)
        reply = await asyncio.wrap_future(encoding)
        ticket.hold(len(reply))
        return reply

    async def retrieve(request: Request) -> Response:
        content_type = request.headers.get("content-type", "application/json")
        if "json" not in content_type.lower():
            return error_response(f"Content-Type must be application/json, not {content_type!r}", 415)
        ticket = admission.ticket()
        try:
            return ReplyResponse(await reply_body(request, ticket), ticket)
        except BaseException as error:
            ticket.release()
            if not isinstance(error, Exception):
                raise  # cancelled: the server is shutting down
            return failure_response(request, error)

    async def health(request: Request) -> Response:
        return json_response({**retriever.health(), "limits": limits.__dict__, "load": admission.state()})

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
    app.state.admission = admission
    app.state.limits = limits
    weakref.finalize(app, searcher.shutdown, wait=False)
    weakref.finalize(app, encoder.shutdown, wait=False)
    return app


def _client(request: Request) -> str:
    return "%s:%d" % tuple(request.client) if request.client else "?"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_warning(host: str) -> str | None:
    """The warning to give when the server would listen beyond this machine, else None."""
    if is_loopback(host):
        return None
    return (f"the retrieval server is listening on {host}, beyond this machine, and has no authentication: "
            "anyone who can reach the port can query it (bind 127.0.0.1 and tunnel, or firewall the port)")


def uvicorn_config(
    app: Starlette,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log_level: str = "warning",
    log_config: dict[str, Any] | None = None,
) -> uvicorn.Config:
    """Uvicorn settings shared by `serve` and the in-process background server: the
    connection deadlines and caps of the app's `Limits` (see `envs.retrieval.deadlines`)."""
    limits: Limits = app.state.limits
    extra = {} if log_config is None else {"log_config": log_config}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=guarded_protocol(limits),
        log_level=log_level,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=limits.keep_alive_s,  # type: ignore[arg-type]  # any number works
        **extra,
    )
    warning = exposure_warning(host)
    if warning is not None:  # after uvicorn's logging set-up, so it shows as the server's own
        log.warning(warning)
    return config


def serve_log_config(log_level: str) -> dict[str, Any]:
    """Uvicorn's logging set-up, with this package's loggers on its handler at `log_level`
    (the server's own one-line notices, such as closed connections, are debug records)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["envs.retrieval"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return config


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
    app = create_app(retriever, limits)
    gc.collect()
    gc.freeze()
    uvicorn.Server(uvicorn_config(app, host, port, log_level, serve_log_config(log_level))).run()
