"""Getting each published adapter onto every server of a fleet, provably.

After a trainer update the adapter folder is loaded on every live server with vLLM's
``POST /v1/load_lora_adapter`` (servers started with ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``
and ``--enable-lora``), then:

- under a new name each time, ``<run>-v<k>``, never reused: vLLM keys its prefix cache by
  adapter id, and reloading changed weights under a known name keeps serving blocks computed
  with the old ones;
- confirmed on every server by ``GET /v1/models`` (the load reaching one replica of several,
  or a sync that never delivered, would otherwise only show as quietly off-policy samples):
  a server that answers without the name raises `AdapterSyncError`;
- versions older than the newest `keep` are unloaded (``POST /v1/unload_lora_adapter``).

A server that cannot be reached during a sync is reported back (the engine marks it down);
when it answers its health check again, `bring_up` loads the live version on it, and confirms
it, before the engine lets it take requests.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from agents.engine import Adapter


class AdapterSyncError(Exception):
    """A server answered but did not load, or does not list, the adapter version it was sent."""


@dataclass
class SyncReport:
    """What one sync did: the name it loaded, where, what it unloaded, which servers it could not reach."""

    name: str
    loaded_on: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    unloaded: dict[str, list[str]] = field(default_factory=dict)


class AdapterSync:
    """The adapter versions a fleet serves, and the requests that put them on its servers.

    `clients` maps each server's API root (``http://host:port/v1``) to its `httpx.Client`;
    `keep`: versions left loaded after a sync (0: all)."""

    def __init__(self, clients: Mapping[str, httpx.Client], run_name: str, keep: int = 2, timeout: float = 300.0) -> None:
        if keep < 0:
            raise ValueError(f"keep must be at least 0 (0 keeps every version loaded), got {keep}")
        self.clients = clients
        self.run_name = run_name
        self.keep = keep
        self.timeout = timeout
        self.lock = threading.RLock()
        """Held while a sync or a bring-up runs, so a returning server never misses a version."""
        self.versions: list[tuple[str, str]] = []
        """(name, folder) of every version loaded so far, oldest first; the last one is live."""
        self._loaded: dict[str, list[str]] = {url: [] for url in clients}
        """Names this fleet loaded on each server and has not unloaded yet, oldest first."""
        self._count = 0

    @property
    def live(self) -> tuple[str, str] | None:
        """(name, folder) of the version requests use now; None before the first sync."""
        return self.versions[-1] if self.versions else None

    def next_name(self) -> str:
        self._count += 1
        return f"{self.run_name}-v{self._count}"

    def publish(self, adapter: Adapter, servers: list[str]) -> SyncReport:
        """Load `adapter` (a published folder) under a new name on each of `servers`, confirm
        it on each, then unload what is older than the newest `keep`."""
        if adapter.path is None:
            raise ValueError("the fleet loads adapters from a published folder; this one has no path")
        with self.lock:
            report = SyncReport(self.next_name())
            for url in servers:
                try:
                    self._load(url, report.name, adapter.path)
                except httpx.TransportError:
                    report.unreachable.append(url)
                    continue
                report.loaded_on.append(url)
            if not report.loaded_on:
                raise AdapterSyncError(f"no server of the fleet took {report.name}: {report.unreachable} unreachable")
            self.versions.append((report.name, adapter.path))
            for url in report.loaded_on:
                try:
                    report.unloaded[url] = self._unload_old(url)
                except httpx.TransportError:
                    report.unreachable.append(url)
            return report

    def bring_up(self, url: str) -> str | None:
        """Load the live version on a server that was down (a restarted server has none of
        ours) and confirm it; returns its name (None before any sync: nothing to load)."""
        with self.lock:
            self._loaded[url] = [name for name in self._loaded[url] if name in self.served(url)]
            if self.live is None:
                return None
            name, path = self.live
            if name not in self._loaded[url]:
                self._load(url, name, path)
            self._unload_old(url)
            return name

    def served(self, url: str) -> set[str]:
        """Every model name the server lists (``GET /v1/models``)."""
        response = self.clients[url].get("/models", timeout=self.timeout)
        response.raise_for_status()
        return {str(card["id"]) for card in response.json().get("data", [])}

    # -- requests ------------------------------------------------------------------------------

    def _load(self, url: str, name: str, path: str) -> None:
        client = self.clients[url]
        response = client.post("/load_lora_adapter", json={"lora_name": name, "lora_path": path}, timeout=self.timeout)
        if response.status_code != 200:
            raise AdapterSyncError(f"{url}: loading {name} from {path}: HTTP {response.status_code}: {response.text[:300]}")
        if name not in self.served(url):
            raise AdapterSyncError(f"{url}: answered the load of {name} but does not list it in /v1/models")
        self._loaded[url].append(name)

    def _unload_old(self, url: str) -> list[str]:
        """Unload this fleet's names on `url` beyond the newest `keep` versions."""
        if self.keep == 0:
            return []
        wanted = {name for name, _ in self.versions[-self.keep :]}
        removed = []
        for name in [n for n in self._loaded[url] if n not in wanted]:
            response = self.clients[url].post("/unload_lora_adapter", json={"lora_name": name}, timeout=self.timeout)
            if response.status_code not in (200, 404):  # 404: already gone (a restarted server)
                raise AdapterSyncError(f"{url}: unloading {name}: HTTP {response.status_code}: {response.text[:300]}")
            self._loaded[url].remove(name)
            removed.append(name)
        return removed

    def loaded(self, url: str) -> list[str]:
        """Names this fleet has loaded on `url` and not unloaded, oldest first."""
        with self.lock:
            return list(self._loaded[url])

