"""Misbehaving clients against a retrieval server on loopback, and what the server does.

Used by ``benchmarks/test_retrieval_abuse.py`` and its smaller CI test. `run_abuse` runs,
for a bounded time and number of connections, all at once:

- hogs: each keeps `Scenario.hog_connections` connections, on each of which it sends a
  request the server must refuse (4096 queries x topk 100, the request that once built a
  311 MB reply) and then `Scenario.hog_pipeline` copies of the largest request the server
  admits (topk 100, as many queries as its reply limit allows), and never reads a byte: a
  copy turned away as busy (503) is followed by the next, so each connection ends up with
  a large reply stuck in the server; after `Scenario.hog_hold_s` it hangs up and starts over;
- half-sent requests: connections that send half their headers, or their headers and half
  their body, and wait; each records when the server closed it;
- a normal client sending one single-query request (topk 3, an env's search turn) after
  another, honouring ``Retry-After``, recording latency and status;
- a sampler of the server process's resident memory (psutil) every `Scenario.sample_s`.

Everything connects to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import selectors
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from envs.retrieval.wire import reply_bound


@dataclass(frozen=True)
class Scenario:
    hogs: int = 8
    hog_connections: int = 2
    hog_pipeline: int = 8
    hog_hold_s: float = 40.0
    half_headers: int = 100
    half_bodies: int = 100
    min_duration_s: float = 5.0
    max_duration_s: float = 120.0
    normal_pause_s: float = 0.02
    sample_s: float = 0.02
    hog_receive_buffer: int = 16 * 1024
    """The hogs' socket receive buffer: small, so the server, not the kernel, holds their replies."""


@dataclass
class Report:
    baseline_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    half_headers_closed_s: list[float] = field(default_factory=list)
    half_bodies_closed_s: list[float] = field(default_factory=list)
    half_sent_left_open: int = 0
    hog_requests: int = 0
    hog_connections: int = 0
    normal_latencies_s: list[float] = field(default_factory=list)
    normal_statuses: dict[int, int] = field(default_factory=dict)
    normal_busy_retries: int = 0
    normal_failures: int = 0
    duration_s: float = 0.0
    peak_pending_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        latencies = sorted(self.normal_latencies_s) or [0.0]
        return {
            "baseline_rss_mib": round(self.baseline_rss_mib, 1),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "half_headers_closed_min_s": round(min(self.half_headers_closed_s, default=0.0), 2),
            "half_headers_closed_max_s": round(max(self.half_headers_closed_s, default=0.0), 2),
            "half_bodies_closed_min_s": round(min(self.half_bodies_closed_s, default=0.0), 2),
            "half_bodies_closed_max_s": round(max(self.half_bodies_closed_s, default=0.0), 2),
            "half_sent_closed": len(self.half_headers_closed_s) + len(self.half_bodies_closed_s),
            "half_sent_left_open": self.half_sent_left_open,
            "hog_connections": self.hog_connections,
            "hog_requests": self.hog_requests,
            "normal_requests": len(self.normal_latencies_s),
            "normal_failures": self.normal_failures,
            "normal_busy_retries": self.normal_busy_retries,
            "normal_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "normal_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
            "normal_max_ms": round(latencies[-1] * 1000, 1),
            "peak_pending_mib": round(self.peak_pending_bytes / 2**20, 1),
            "duration_s": round(self.duration_s, 1),
        }


def _request(body: bytes, *, declared: int | None = None) -> bytes:
    length = len(body) if declared is None else declared
    head = (f"POST /retrieve HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n")
    return head.encode() + body


def _body(queries: list[str], topk: int) -> bytes:
    return json.dumps({"queries": queries, "topk": topk, "return_scores": True}).encode()


def largest_admitted(health: dict[str, Any], questions: list[str]) -> bytes:
    """The /retrieve request with topk at the server's maximum and as many queries as its
    reply limit admits (from the limits and largest passage its /health reports)."""
    limits, largest = health["limits"], health["max_document_bytes"]
    topk, count = limits["max_topk"], 1
    while count < limits["max_queries"] and reply_bound(count + 1, topk, largest) <= limits["max_reply_bytes"]:
        count += 1
    return _body([questions[i % len(questions)] for i in range(count)], topk)


class _Sampler(threading.Thread):
    def __init__(self, pid: int, every_s: float) -> None:
        super().__init__(daemon=True, name="abuse-rss")
        self.process, self.every_s = psutil.Process(pid), every_s
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self.stop.wait(self.every_s)


def _hog(address: tuple[str, int], requests: bytes, scenario: Scenario, stop: threading.Event, report: Report,
         lock: threading.Lock) -> None:
    while not stop.is_set():
        sockets = []
        for _ in range(scenario.hog_connections):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, scenario.hog_receive_buffer)
            try:
                sock.connect(address)
                sock.sendall(requests)
            except OSError:
                pass  # refused (too many connections) or cut: try again next round
            sockets.append(sock)
        with lock:
            report.hog_connections += len(sockets)
            report.hog_requests += (1 + scenario.hog_pipeline) * len(sockets)
        stop.wait(scenario.hog_hold_s)
        for sock in sockets:
            sock.close()


def _normal(url: str, questions: list[str], scenario: Scenario, stop: threading.Event, report: Report) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        i = 0
        while not stop.is_set():
            payload = {"queries": [questions[i % len(questions)]], "topk": 3, "return_scores": True}
            started = time.perf_counter()
            status = 0
            for _ in range(10):
                try:
                    reply = client.post("/retrieve", json=payload)
                    status = reply.status_code
                except httpx.HTTPError:
                    status = 0
                if status != 503:
                    break
                report.normal_busy_retries += 1
                time.sleep(float(reply.headers.get("retry-after", 1)))
            report.normal_latencies_s.append(time.perf_counter() - started)
            report.normal_statuses[status] = report.normal_statuses.get(status, 0) + 1
            report.normal_failures += status != 200
            i += 1
            stop.wait(scenario.normal_pause_s)


def _half_sent(address: tuple[str, int], scenario: Scenario, report: Report, deadline: float) -> None:
    """Open the half-sent connections, then wait (one thread, a selector) for the server to
    close each; a close is the socket turning readable with nothing (or a reset) to read."""
    headers = _request(_body(["half sent"], 3))
    cut_headers = headers[: headers.index(b"\r\n\r\n") // 2]
    body = _body(["half sent body"] * 50, 3)
    cut_body = _request(body[: len(body) // 2], declared=len(body))
    selector = selectors.DefaultSelector()
    for kind, count, payload in (("headers", scenario.half_headers, cut_headers),
                                 ("bodies", scenario.half_bodies, cut_body)):
        for _ in range(count):
            sock = socket.create_connection(address, timeout=5)
            sock.sendall(payload)
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, (kind, time.monotonic()))
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.1):
            sock = key.fileobj
            kind, sent_at = key.data
            try:
                data = sock.recv(65536)  # type: ignore[union-attr]
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # a reply (e.g. 408/400) before the close: keep waiting for the close
            closed = time.monotonic() - sent_at
            (report.half_headers_closed_s if kind == "headers" else report.half_bodies_closed_s).append(closed)
            selector.unregister(sock)
            sock.close()  # type: ignore[union-attr]
    report.half_sent_left_open = len(selector.get_map())
    for key in list(selector.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    selector.close()


def run_abuse(url: str, server_pid: int, questions: list[str], scenario: Scenario | None = None) -> Report:
    """Abuse the server at `url` (process `server_pid`) as the module docstring says."""
    scenario = scenario or Scenario()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    if host not in ("127.0.0.1", "localhost"):
        raise ValueError(f"abuse runs against a loopback server only, not {host}")
    address = (host, int(port))
    health = httpx.get(f"{url}/health", timeout=10).json()
    hog_requests = (_request(_body(questions[:1] * 4096, 100))
                    + _request(largest_admitted(health, questions)) * scenario.hog_pipeline)
    report = Report(baseline_rss_mib=psutil.Process(server_pid).memory_info().rss / 2**20)
    sampler = _Sampler(server_pid, scenario.sample_s)
    sampler.start()
    stop, lock = threading.Event(), threading.Lock()
    started = time.monotonic()
    threads = [threading.Thread(target=_normal, args=(url, questions, scenario, stop, report), daemon=True)]
    threads += [threading.Thread(target=_hog, args=(address, hog_requests, scenario, stop, report, lock), daemon=True)
                for _ in range(scenario.hogs)]
    for thread in threads:
        thread.start()
    _half_sent(address, scenario, report, started + scenario.max_duration_s)
    stop.wait(max(0.0, started + scenario.min_duration_s - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(60)
    report.duration_s = time.monotonic() - started
    sampler.stop.set()
    sampler.join(5)
    report.peak_rss_mib = sampler.peak / 2**20
    load = httpx.get(f"{url}/health", timeout=10).json()["load"]
    report.peak_pending_bytes = load["peak_pending_bytes"]
    return report
