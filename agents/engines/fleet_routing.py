"""Which server of a fleet takes a request: rendezvous hashing with spill-over and down-marking.

Why rendezvous (highest-random-weight) hashing: every sample of a group shares one prompt, and
every turn of an episode extends the previous turn's ids, so sending them to one server lets
its prefix cache serve the shared part once. Each server scores ``hash(server, key)`` and the
request goes to the highest score: the same key always ranks the servers the same way, keys
spread evenly, and when a server leaves (or comes back) only the keys it ranked first move.

A server already holding `per_server_cap` requests passes new ones to the next server in the
key's ranking (spill-over), so one hot group cannot queue behind itself while another server
idles; when every live server is at its cap the least-loaded one, in ranking order, takes it.
A server that failed (connection refused, timeout) is marked down and skipped until it is
marked up again (by the fleet's health poll, once its adapter is loaded).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Collection, Sequence


class NoServerAvailable(Exception):
    """Every server of the fleet is marked down (or excluded)."""


def hrw_score(server: str, key: str) -> int:
    """The rendezvous weight of `server` for `key` (stable across processes and runs)."""
    digest = hashlib.blake2b(f"{server}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def hrw_order(key: str, servers: Sequence[str]) -> list[str]:
    """`servers` ranked for `key`, best first."""
    return sorted(servers, key=lambda server: (-hrw_score(server, key), server))


class FleetRouter:
    """Thread-safe routing state of a fleet: requests in flight per server, and which are down."""

    def __init__(self, servers: Sequence[str], per_server_cap: int) -> None:
        if not servers:
            raise ValueError("a fleet needs at least one server")
        if len(set(servers)) != len(servers):
            raise ValueError(f"a server is listed twice: {list(servers)}")
        if per_server_cap < 1:
            raise ValueError(f"per_server_cap must be at least 1, got {per_server_cap}")
        self.servers = list(servers)
        self.per_server_cap = per_server_cap
        self._lock = threading.Lock()
        self._in_flight = dict.fromkeys(self.servers, 0)
        self._down: set[str] = set()
        self.sent: Counter[str] = Counter()
        """Requests sent to each server (retries included)."""
        self.spilled = 0
        """Requests that went past their key's first live server because it was at its cap."""

    def acquire(self, key: str, exclude: Collection[str] = ()) -> str:
        """The server that takes a request for `key` now (counted in flight until `release`);
        `exclude`: servers this request already failed on. Raises `NoServerAvailable`."""
        with self._lock:
            ranked = [s for s in hrw_order(key, self.servers) if s not in self._down and s not in exclude]
            if not ranked:
                raise NoServerAvailable(f"no live server for this request (down: {sorted(self._down)})")
            chosen = next((s for s in ranked if self._in_flight[s] < self.per_server_cap), None)
            if chosen is None:
                chosen = min(ranked, key=lambda s: self._in_flight[s])  # min keeps ranking order on ties
            if chosen != ranked[0]:
                self.spilled += 1
            self._in_flight[chosen] += 1
            self.sent[chosen] += 1
            return chosen

    def release(self, server: str) -> None:
        with self._lock:
            self._in_flight[server] -= 1

    def in_flight(self, server: str) -> int:
        with self._lock:
            return self._in_flight[server]

    def mark_down(self, server: str) -> bool:
        """Skip `server` from now on; True if it was live until now."""
        with self._lock:
            was_live = server not in self._down
            self._down.add(server)
            return was_live

    def mark_up(self, server: str) -> None:
        with self._lock:
            self._down.discard(server)

    def is_down(self, server: str) -> bool:
        with self._lock:
            return server in self._down

    @property
    def down(self) -> list[str]:
        with self._lock:
            return [s for s in self.servers if s in self._down]

    @property
    def live(self) -> list[str]:
        with self._lock:
            return [s for s in self.servers if s not in self._down]
