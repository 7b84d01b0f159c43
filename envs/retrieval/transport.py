"""An httpx transport over the standard library's `http.client`, for plain-http servers.

httpx's own transport (httpcore + h11) moves a response body through several small-buffer
copies per 64 KB read: a 12 MB /retrieve reply takes ~30 ms to receive on loopback. Here the
body is read with one allocation straight from the socket (~5 ms). The client keeps httpx's
API (timeouts, errors, test transports); this only replaces the bytes-moving part.
Connections are kept alive and reused, one per concurrent request.
"""

from __future__ import annotations

import http.client
import socket
import threading
import urllib.request

import httpx

_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
"""What a kept-alive connection the server has since closed raises on its next request."""


def proxied(url: str) -> bool:
    """Whether the environment routes `url` through a proxy (then httpx's transport is used)."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parsed.host, proxies)


class StdlibTransport(httpx.BaseTransport):
    """`http://` requests over pooled `http.client.HTTPConnection`s, errors mapped to httpx's."""

    def __init__(self, max_idle: int = 8) -> None:
        self.max_idle = max_idle
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{type(self).__name__} serves http:// only, not {url.scheme}://")
        key = (url.host, url.port or 80)
        timeout = request.extensions.get("timeout", {})
        body = request.read()
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]
        target = url.raw_path.decode("ascii")
        while True:
            connection, reused = self._checkout(key, timeout.get("connect"), request)
            try:
                connection.sock.settimeout(timeout.get("read"))
                connection.putrequest(request.method, target, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    connection.putheader(name, value)
                connection.endheaders(body or None)
                response = connection.getresponse()
                content = response.read()
            except _STALE as error:
                connection.close()
                if reused:  # the server closed it while idle: not a failure of this request
                    continue
                raise httpx.RemoteProtocolError(f"{type(error).__name__}: {error}", request=request) from None
            except TimeoutError as error:
                connection.close()
                raise httpx.ReadTimeout(f"timed out: {error}", request=request) from None
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise httpx.ReadError(f"{type(error).__name__}: {error}", request=request) from None
            if response.will_close:
                connection.close()
            else:
                self._checkin(key, connection)
            return httpx.Response(
                response.status, headers=response.getheaders(), stream=httpx.ByteStream(content), request=request
            )

    def _checkout(
        self, key: tuple[str, int], connect_timeout: float | None, request: httpx.Request
    ) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        connection = http.client.HTTPConnection(key[0], key[1], timeout=connect_timeout)
        try:
            connection.connect()
        except TimeoutError as error:
            raise httpx.ConnectTimeout(f"timed out connecting to {key[0]}:{key[1]}: {error}", request=request) from None
        except OSError as error:
            raise httpx.ConnectError(f"{type(error).__name__}: {error}", request=request) from None
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, False

    def _checkin(self, key: tuple[str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._lock:
            connections = [c for idle in self._idle.values() for c in idle]
            self._idle.clear()
        for connection in connections:
            connection.close()
