"""A retrieval server inside this process, for search envs that were given no server URL.

`ensure_local_server()` opens (building and caching on first use) an index of the bundled
corpus, serves it on a free 127.0.0.1 port from a daemon thread, and returns the base URL.
Later calls with the same arguments reuse that server; all of them stop at interpreter exit.
`ServerProcess` runs the same server as a child process instead (benchmarks, tools).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from envs.retrieval.backends import DEFAULT_BACKEND
from envs.retrieval.searcher import LocalRetriever
from envs.retrieval.server import DEFAULT_HOST, create_app, uvicorn_config
from envs.retrieval.wire import Limits

START_TIMEOUT_S = 60.0


@dataclass
class BackgroundServer:
    """A uvicorn server running on its own thread; `stop()` shuts it down cleanly."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread
    retriever: LocalRetriever

    @classmethod
    def start(cls, retriever: LocalRetriever, host: str = DEFAULT_HOST, limits: Limits | None = None) -> BackgroundServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn_config(create_app(retriever, limits), host, port))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"retrieval-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                raise RuntimeError(f"the local retrieval server did not start on {host}:{port}")
            time.sleep(0.01)
        return cls(url=f"http://{host}:{port}", server=server, thread=thread, retriever=retriever)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


@dataclass
class ServerProcess:
    """`espl-bench retriever serve` in a child process (its own GIL and cores)."""

    url: str
    process: subprocess.Popen

    @classmethod
    def start(
        cls,
        index_dir: str | Path | None,
        port: int | None = None,
        timeout_s: float = START_TIMEOUT_S,
        args: Sequence[str] = ("--log-level", "warning"),
        log_path: str | Path | None = None,
    ) -> ServerProcess:
        """Start it with `args` after the index and port, its stderr to `log_path` if given
        (read it after `stop`; a pipe nobody reads would stall a server that logs much).
        `index_dir=None` serves the built-in corpus."""
        import httpx

        port = port or free_port()
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
        index = ["--index", str(index_dir)] if index_dir is not None else []
        command = [sys.executable, "-m", "espl.cli", "retriever", "serve", *index, "--port", str(port), *args]
        stderr = open(log_path, "wb") if log_path is not None else subprocess.PIPE  # noqa: SIM115
        try:
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        finally:
            if log_path is not None:
                stderr.close()  # type: ignore[union-attr]  # the child has its own copy
        url = f"http://{DEFAULT_HOST}:{port}"
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                httpx.get(f"{url}/health", timeout=2).raise_for_status()
                return cls(url, process)
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    process.wait()
                    if log_path is not None:
                        error = Path(log_path).read_text(errors="replace")
                    else:
                        error = process.stderr.read().decode(errors="replace") if process.stderr else ""
                    raise RuntimeError(f"retrieval server process did not start on {url}: {error[-2000:]}") from None
                time.sleep(0.1)

    def stop(self, timeout: float = 20.0) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


_SERVERS: dict[tuple[str, str], BackgroundServer] = {}
_LOCK = threading.Lock()


def ensure_local_server(index_dir: str | Path | None = None, backend: str = DEFAULT_BACKEND) -> str:
    """The base URL of this process's server for `index_dir` (default: the bundled corpus).

    With no `index_dir`, the bundled corpus is indexed with `backend` into the cache
    (``$ESPL_BENCH_CACHE`` or ``~/.cache/espl-bench``) the first time, then reused.
    """
    key = (str(Path(index_dir).expanduser().resolve()) if index_dir is not None else "builtin", backend)
    with _LOCK:
        running = _SERVERS.get(key)
        if running is not None and running.thread.is_alive():
            return running.url
        retriever = LocalRetriever.from_index_dir(index_dir) if index_dir is not None else LocalRetriever.builtin(backend)
        retriever.warm_up()
        _SERVERS[key] = BackgroundServer.start(retriever)
        return _SERVERS[key].url


def stop_local_servers() -> None:
    """Stop every server `ensure_local_server` started (also run at interpreter exit)."""
    with _LOCK:
        servers = list(_SERVERS.values())
        _SERVERS.clear()
    for server in servers:
        server.stop()


atexit.register(stop_local_servers)
