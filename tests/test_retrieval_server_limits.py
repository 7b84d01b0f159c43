"""The retrieval server's bounds over real sockets on 127.0.0.1: read, write and keep-alive
deadlines, the request, byte and connection caps, and quiet client disconnects.

The retriever here is a stand-in that answers at once (or after a set delay) with a reply of
a chosen size, so each test is about the connection, and takes about a second.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from envs.retrieval.local import BackgroundServer
from envs.retrieval.server import create_app, exposure_warning, is_loopback, uvicorn_config
from envs.retrieval.wire import Limits

pytestmark = pytest.mark.timeout(60)


class BlobRetriever:
    """Searches in `delay_s`; replies with `reply_bytes` of valid JSON; claims `hit_bytes` per hit."""

    def __init__(self, reply_bytes: int = 100, delay_s: float = 0.0, hit_bytes: int = 100) -> None:
        self.reply_bytes, self.delay_s, self.hit_bytes = reply_bytes, delay_s, hit_bytes

    def search(self, queries, topk: int) -> list[str]:
        time.sleep(self.delay_s)
        return list(queries)

    def encode_reply(self, hits: list[str], return_scores: bool) -> bytes:
        head = b'{"result":[' + b",".join(b"[]" for _ in hits) + b'],"pad":"'
        return head + b"x" * max(0, self.reply_bytes - len(head) - 2) + b'"}'

    def reply_bound(self, queries: int, topk: int) -> int:
        return max(self.reply_bytes, queries * topk * self.hit_bytes)

    def health(self) -> dict:
        return {"status": "ok"}


@pytest.fixture
def serve() -> Iterator:
    started: list[BackgroundServer] = []

    def start(retriever=None, **limits) -> BackgroundServer:
        started.append(BackgroundServer.start(retriever or BlobRetriever(), limits=Limits(**limits)))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def address(server: BackgroundServer) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def request_bytes(body: bytes, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    return (b"POST /retrieve HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % length) + body


QUERY = json.dumps({"queries": ["q"], "topk": 1}).encode()


def seconds_until_closed(sockets: list[socket.socket], limit_s: float) -> list[float | None]:
    """For each socket (all just written to), when the server closed it; None if not by `limit_s`."""
    started = time.monotonic()
    closed: list[float | None] = [None] * len(sockets)
    with selectors.DefaultSelector() as selector:
        for i, sock in enumerate(sockets):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, i)
        while selector.get_map() and time.monotonic() - started < limit_s:
            for key, _ in selector.select(0.05):
                try:
                    if key.fileobj.recv(65536):  # type: ignore[union-attr]
                        continue
                except BlockingIOError:
                    continue
                except OSError:
                    pass
                closed[key.data] = time.monotonic() - started
                selector.unregister(key.fileobj)
    return closed


@pytest.fixture(params=["httptools", "h11"])
def protocol(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test over each HTTP implementation uvicorn may pick (h11 when httptools is absent)."""
    if request.param == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        monkeypatch.setattr("envs.retrieval.deadlines.default_http_protocol", lambda: H11Protocol)
    return request.param


def test_half_sent_requests_are_closed_at_their_deadlines(serve, protocol: str) -> None:
    server = serve(header_timeout_s=0.5, body_timeout_s=0.8)
    half_headers = request_bytes(QUERY)[:30]
    half_body = request_bytes(QUERY[:5], declared=len(QUERY))
    payloads = [b""] * 4 + [half_headers] * 4 + [half_body] * 4
    sockets = [socket.create_connection(address(server)) for _ in payloads]
    for sock, payload in zip(sockets, payloads):
        sock.sendall(payload)
    closed = seconds_until_closed(sockets, 5)
    for sock in sockets:
        sock.close()
    assert all(0.4 < s < 1.5 for s in closed[:8]), closed  # nothing, or half the headers: 0.5 s
    assert all(0.7 < s < 1.8 for s in closed[8:]), closed  # the headers, half the body: 0.8 s
    assert httpx.post(f"{server.url}/retrieve", json={"queries": ["q"]}).status_code == 200


def test_deadlines_are_per_phase_and_spare_requests_under_way(serve, protocol: str) -> None:
    server = serve(BlobRetriever(delay_s=1.0), header_timeout_s=0.8, body_timeout_s=0.8, keep_alive_s=0.5)
    whole = request_bytes(QUERY)
    split = whole.index(b"\r\n\r\n") + 4
    with socket.create_connection(address(server), timeout=5) as sock:
        for part in (whole[:20], whole[20:split], whole[split:split + 5], whole[split + 5:]):
            sock.sendall(part)
            time.sleep(0.3)  # headers in 0.3 s, body 0.6 s later: the whole request past 0.8 s
        reply = sock.recv(65536)  # and the search takes 1 s, past both read deadlines
        assert reply.startswith(b"HTTP/1.1 200"), reply[:100]
        idle = seconds_until_closed([sock], 5)[0]
    assert idle is not None and 0.4 < idle < 1.5, "an idle kept-alive connection closes after keep_alive_s"


def test_a_client_that_stops_reading_is_cut_and_its_bytes_released(serve, protocol: str) -> None:
    size = 32 << 20
    server = serve(BlobRetriever(reply_bytes=size), write_timeout_s=0.5, max_reply_bytes=64 << 20)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.connect(address(server))
        sock.sendall(request_bytes(QUERY))
        time.sleep(0.3)
        load = httpx.get(f"{server.url}/health").json()["load"]
        assert load["requests"] == 1 and load["pending_bytes"] >= size, "an unread reply stays counted"
        started = time.monotonic()
        while httpx.get(f"{server.url}/health").json()["load"]["pending_bytes"] and time.monotonic() - started < 5:
            time.sleep(0.05)
        assert time.monotonic() - started < 2.5
        assert httpx.get(f"{server.url}/health").json()["load"] == {
            "requests": 0, "pending_bytes": 0, "peak_pending_bytes": load["peak_pending_bytes"]}
        received = 0
        sock.settimeout(5)
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < size, "the connection was cut, not the reply delivered"


def test_requests_past_the_cap_get_503_with_retry_after(serve) -> None:
    server = serve(BlobRetriever(delay_s=1.0), max_requests=2, retry_after_s=3)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: httpx.post(f"{server.url}/retrieve", json={"queries": ["q"]}), range(4)))
    busy = [reply for reply in replies if reply.status_code == 503]
    assert sorted(reply.status_code for reply in replies) == [200, 200, 503, 503]
    assert all(r.headers["retry-after"] == "3" and "2 requests in progress" in r.json()["error"] for r in busy)


def test_bytes_past_the_budget_get_503_but_small_requests_pass(serve) -> None:
    mib = 1 << 20
    server = serve(BlobRetriever(delay_s=1.0, hit_bytes=20 * 1024), max_body_bytes=mib, max_reply_bytes=20 * mib,
                   max_pending_bytes=21 * mib)

    def post(queries: int, topk: int) -> httpx.Response:
        return httpx.post(f"{server.url}/retrieve", json={"queries": ["q"] * queries, "topk": topk}, timeout=10)

    with ThreadPoolExecutor(3) as pool:
        large = pool.submit(post, 512, 2)  # holds 20 MiB while it searches
        started = time.monotonic()
        while httpx.get(f"{server.url}/health").json()["load"]["pending_bytes"] < 20 * mib:
            assert time.monotonic() - started < 5
            time.sleep(0.01)
        second, small = pool.submit(post, 256, 2), pool.submit(post, 1, 1)
        assert second.result().status_code == 503 and "bytes" in second.result().json()["error"]
        assert second.result().headers["retry-after"] == "1"
        assert small.result().status_code == 200, "a request of 20 KB is never turned away for bytes"
        assert large.result().status_code == 200


def test_connections_past_the_cap_get_503_and_are_closed(serve) -> None:
    server = serve(max_connections=3)
    held = [socket.create_connection(address(server)) for _ in range(3)]
    with socket.create_connection(address(server), timeout=5) as extra:
        reply = extra.recv(65536)
        assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply
        assert extra.recv(65536) == b""
    held.pop().close()
    time.sleep(0.2)
    assert httpx.post(f"{server.url}/retrieve", json={"queries": ["q"]}).status_code == 200
    for sock in held:
        sock.close()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_logs() -> Iterator[Records]:
    """Every record of the server's and uvicorn's loggers (uvicorn's do not reach the root)."""
    handler = Records()
    loggers = [logging.getLogger(name) for name in ("envs.retrieval", "uvicorn", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_a_client_disconnect_mid_body_is_one_debug_line(serve, server_logs: Records) -> None:
    server = serve()
    disconnects = 20
    for _ in range(disconnects):
        with socket.create_connection(address(server)) as sock:
            sock.sendall(request_bytes(QUERY[:5], declared=len(QUERY)))
            time.sleep(0.01)
    started = time.monotonic()
    lines = []
    while len(lines) < disconnects and time.monotonic() - started < 5:
        time.sleep(0.05)
        lines = [r for r in server_logs.records if "disconnected before its request body" in r.getMessage()]
    assert len(lines) == disconnects and all(r.levelno == logging.DEBUG for r in lines)
    assert not [r for r in server_logs.records if r.exc_info or r.levelno >= logging.ERROR]
    assert httpx.post(f"{server.url}/retrieve", json={"queries": ["q"]}).status_code == 200


def test_a_non_loopback_host_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(BlobRetriever())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="envs.retrieval.server"):
        for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
            uvicorn_config(app, host, 0)
        assert not caplog.records
        uvicorn_config(app, "0.0.0.0", 0)
    assert len(caplog.records) == 1 and "no authentication" in caplog.records[0].getMessage()
    assert exposure_warning("::") and exposure_warning("10.0.0.5") and exposure_warning("my-host.example")
    assert is_loopback("[::1]") and not is_loopback("0.0.0.0")


@pytest.mark.parametrize("bad", [{"max_pending_bytes": 1}, {"header_timeout_s": 0}, {"max_requests": -1}])
def test_inconsistent_limits_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError, match="max_pending_bytes|must be positive"):
        Limits(**bad)
