"""Uvicorn's HTTP protocol with the deadlines it lacks: slow requests, stalled readers, floods.

Uvicorn (0.55, httptools and h11 alike) arms one timer per connection, the keep-alive timer,
and only after a response is complete. A connection that sends half its headers, or its
headers and half its body, is never timed out: 400 such connections were still open after
75 s. Nor is one whose client stops reading a large reply: the reply stays in the
transport's buffer, and closing the transport waits for the buffer to drain, which it never
does. So `guarded_protocol` subclasses the protocol uvicorn would pick and adds:

- a header deadline: a request's headers must be complete within `Limits.header_timeout_s`
  of its first byte (or of the connection, for the first request);
- a body deadline: its body must be complete within `Limits.body_timeout_s` of its headers;
- a write deadline: while the transport has paused writing (its buffer is over the high-water
  mark), the buffer must shrink at least once every `Limits.write_timeout_s`;
- a connection cap: beyond `Limits.max_connections` open connections, a new one is answered
  503 with ``Retry-After`` and closed before anything is read.

A deadline that passes closes the connection (aborts it when unsent bytes would keep it
open); the app sees a client disconnect. Requests in the app (queued or searching) are never
timed out here: their cost is bounded by `envs.retrieval.admission` instead.

The protocol also sees its transport through `_QuietTransport`, which drops writes once the
transport is closing, as asyncio's own transports do; uvloop's raise instead. A reply waits
for the connection to drain before its last (empty) write (`envs.retrieval.server`), and a
connection that breaks meanwhile is closed by uvloop a loop turn before uvicorn is told: that
write then raised, and an everyday disconnect logged a traceback and an error line.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from envs.retrieval.wire import Limits

log = logging.getLogger(__name__)

HEADERS, BODY = "headers", "body"


def _busy_response(retry_after_s: int) -> bytes:
    body = b'{"error":"server busy: too many open connections; retry shortly"}'
    return (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"retry-after: %d\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (retry_after_s, len(body), body)
    )


class _QuietTransport:
    """A transport whose `write` does nothing once it is closing; all else is the transport's."""

    __slots__ = ("_transport",)

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._transport.is_closing():
            self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Guard:
    """The deadlines, as a mixin over uvicorn's `HttpToolsProtocol` or `H11Protocol`.

    Both keep the request in flight as ``self.cycle``, whose ``more_body`` turns false once
    the body is complete and ``response_complete`` true once the reply is sent; the phase is
    read from them after each read, so nothing of either parser is touched.
    """

    limits: Limits
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    connections: set[Any]
    cycle: Any
    client: tuple[str, int] | None

    _phase: str | None = None
    _read_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None
    _unsent = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_QuietTransport(transport))  # type: ignore[misc]
        if len(self.connections) > self.limits.max_connections:
            log.debug("refused a connection from %s: %d open (the limit)", _peer(self), len(self.connections) - 1)
            transport.write(_busy_response(self.limits.retry_after_s))
            transport.close()
            return
        self._enter(HEADERS)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)  # type: ignore[misc]
        if self.transport.is_closing():
            self._enter(None)
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self._enter(HEADERS)  # bytes of a next request (or the tail of a refused body)
        elif cycle.more_body:
            self._enter(BODY)
        else:
            self._enter(None)  # the request is complete: the app has it

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        self._stop_write_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def pause_writing(self) -> None:
        super().pause_writing()  # type: ignore[misc]
        self._unsent = self.transport.get_write_buffer_size()
        self._stop_write_timer()
        self._write_timer = self.loop.call_later(self.limits.write_timeout_s, self._check_write)

    def resume_writing(self) -> None:
        self._stop_write_timer()
        super().resume_writing()  # type: ignore[misc]

    def _enter(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._phase = phase
        if phase is not None:
            timeout = self.limits.header_timeout_s if phase == HEADERS else self.limits.body_timeout_s
            self._read_timer = self.loop.call_later(timeout, self._read_expired, phase, timeout)

    def _read_expired(self, phase: str, timeout: float) -> None:
        self._read_timer = None
        log.debug("closed the connection from %s: request %s not received within %g s", _peer(self), phase, timeout)
        self._close()

    def _check_write(self) -> None:
        unsent = self.transport.get_write_buffer_size()
        if unsent and unsent < self._unsent:  # the client is reading, however slowly
            self._unsent = unsent
            self._write_timer = self.loop.call_later(self.limits.write_timeout_s, self._check_write)
            return
        self._write_timer = None
        if unsent:
            log.debug("cut the connection from %s: %d reply bytes unread for %g s", _peer(self), unsent,
                      self.limits.write_timeout_s)
            self.transport.abort()

    def _stop_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _close(self) -> None:
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # close() would wait for a client that does not read
        else:
            self.transport.close()


def _peer(protocol: Any) -> str:
    client = getattr(protocol, "client", None)
    return "%s:%d" % client if client else "?"


def default_http_protocol() -> type[asyncio.Protocol]:
    """The HTTP/1.1 protocol class uvicorn's ``http="auto"`` picks (httptools if installed)."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    return AutoHTTPProtocol


def guarded_protocol(limits: Limits, base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """`base` (default: uvicorn's choice) with the deadlines and connection cap of `limits`;
    pass it as ``uvicorn.Config(http=...)``."""
    base = base or default_http_protocol()
    return type(f"Guarded{base.__name__}", (_Guard, base), {"limits": limits, "__module__": __name__})
