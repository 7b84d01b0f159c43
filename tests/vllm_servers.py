"""Real `vllm serve` processes for tests: start one, wait until it answers ``GET /health``,
stop it (its whole process group: the API server spawns the engine core)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(command: Sequence[str], log: Path, *, env: Mapping[str, str] | None = None,
           cwd: Path | None = None) -> subprocess.Popen:
    """Start `command` in its own session, its output into `log`."""
    with open(log, "ab") as output:
        return subprocess.Popen(list(command), env=None if env is None else dict(env), cwd=cwd, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_healthy(process: subprocess.Popen, url: str, log: Path, timeout: float = 600) -> float:
    """Poll ``url/health`` until it answers 200; fail the test (with the log's tail) if the
    process exits or `timeout` seconds pass. Returns the seconds waited."""
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.TransportError:
            pass
        if time.monotonic() - started > timeout:
            pytest.fail(f"server not healthy after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM to the server's process group, SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def kill(process: subprocess.Popen) -> None:
    """SIGKILL to the server's process group (a crash, not a shutdown)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


@contextmanager
def served(command: Sequence[str], url: str, log: Path, *, env: Mapping[str, str] | None = None,
           cwd: Path | None = None, timeout: float = 600) -> Iterator[subprocess.Popen]:
    """A server running `command`, healthy at `url` inside the block, stopped after it."""
    process = launch(command, log, env=env, cwd=cwd)
    try:
        wait_until_healthy(process, url, log, timeout)
        yield process
    finally:
        stop(process)
