"""The stdlib-backed httpx transport: kept-alive reuse, stale connections, errors as httpx's."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from envs.retrieval.transport import StdlibTransport, proxied


class OneShotHandler(BaseHTTPRequestHandler):
    """Answers as if keeping the connection alive, then closes it: a stale kept-alive connection."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.connections.append(self.client_address[1])
        reply = b'{"echo":' + body + b"}"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def one_shot_server():
    OneShotHandler.connections = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), OneShotHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_connection_the_server_closed_is_replaced_not_reported(one_shot_server: str) -> None:
    with httpx.Client(transport=StdlibTransport()) as client:
        for i in range(3):
            reply = client.post(f"{one_shot_server}/x", content=b"[%d]" % i)
            assert reply.status_code == 200 and reply.json() == {"echo": [i]}
    assert len(set(OneShotHandler.connections)) == 3


def test_large_bodies_arrive_whole(one_shot_server: str) -> None:
    payload = b"[" + b",".join(b'"%s"' % (b"x" * 1000) for _ in range(5000)) + b"]"
    with httpx.Client(transport=StdlibTransport()) as client:
        assert client.post(f"{one_shot_server}/x", content=payload).content == b'{"echo":' + payload + b"}"


def test_refused_and_timed_out_connections_are_httpx_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with httpx.Client(transport=StdlibTransport()) as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{port}/")
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with httpx.Client(transport=StdlibTransport(), timeout=0.3) as client, pytest.raises(httpx.ReadTimeout):
            client.get(f"http://127.0.0.1:{silent.getsockname()[1]}/")
        with httpx.Client(transport=StdlibTransport()) as client, pytest.raises(httpx.UnsupportedProtocol):
            client.get("https://127.0.0.1/")


def test_proxy_settings_are_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert not proxied("http://10.1.2.3:8000")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert proxied("http://10.1.2.3:8000")
    monkeypatch.setenv("no_proxy", "10.1.2.3")
    assert not proxied("http://10.1.2.3:8000")
