"""How many requests the retrieval server works on at once, and how many bytes they hold.

Every /retrieve request takes a `Ticket` before its body is read and gives it back once the
last chunk of its reply has been handed to the connection. The ticket holds bytes against
`Limits.max_pending_bytes`: the body as it arrives, then the body plus the reply's
worst-case size while the search runs, then the reply itself until it is sent. Once its
body is complete, it also takes one of `Limits.max_requests` slots (queued, searching or
sending). A request that does not fit gets a 503 with ``Retry-After`` instead of memory: a
reply a client never reads stays counted until the write timeout cuts the connection, so
clients that stop reading make others wait a moment, not the server swap.

Slots are taken only after the body: connections that send half a body (until the body
timeout closes them) must not take the slots of requests that are ready to search.

A ticket that holds at most `SMALL_REQUEST_BYTES` is never refused for bytes (an env's
search turn, one query at topk 3, holds about 25 KB): large requests reserve their worst
case, about 12 times what their reply usually takes, and a few of them must not turn away
every search turn. One ticket per connection at a time, so the bytes held stay under
`max_pending_bytes` + `max_connections` x `SMALL_REQUEST_BYTES`.

Everything here runs on the event loop's thread, so plain integers need no lock.
"""

from __future__ import annotations

from envs.retrieval.wire import BadRequest

SMALL_REQUEST_BYTES = 64 * 1024


class Busy(BadRequest):
    """The server is at one of its shared caps; the client should retry after a moment."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message, 503)
        self.retry_after_s = retry_after_s


class Admission:
    """The server's shared caps: requests worked on at once, and the bytes all requests hold."""

    def __init__(self, max_requests: int, max_bytes: int, retry_after_s: int = 1) -> None:
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.requests = 0
        self.bytes = 0
        self.peak_bytes = 0

    def ticket(self) -> Ticket:
        return Ticket(self)

    def state(self) -> dict[str, int]:
        return {"requests": self.requests, "pending_bytes": self.bytes, "peak_pending_bytes": self.peak_bytes}

    def busy(self, message: str) -> Busy:
        return Busy(f"server busy: {message}; retry shortly", self.retry_after_s)


class Ticket:
    """One request's share of the caps; `release` (idempotent) gives it back."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self.bytes = 0
        self.admitted = False
        self.released = False

    def admit(self) -> None:
        """Take a request slot (the body is complete); `Busy` when all are taken."""
        admission = self._admission
        if admission.requests >= admission.max_requests:
            raise admission.busy(f"{admission.requests} requests in progress (the limit)")
        admission.requests += 1
        self.admitted = True

    def hold(self, nbytes: int) -> None:
        """Hold `nbytes` in all from now on; `Busy` if growing to it would pass the byte cap."""
        admission = self._admission
        grow = nbytes - self.bytes
        if grow > 0 and nbytes > SMALL_REQUEST_BYTES and admission.bytes + grow > admission.max_bytes:
            raise admission.busy(f"{admission.bytes:,} bytes of requests and replies pending, and this request "
                                 f"needs {grow:,} more (the limit is {admission.max_bytes:,})")
        admission.bytes += grow
        admission.peak_bytes = max(admission.peak_bytes, admission.bytes)
        self.bytes = nbytes

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._admission.bytes -= self.bytes
            self._admission.requests -= self.admitted
            self.bytes = 0
