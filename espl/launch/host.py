"""The Ray actor that runs one part's process on the node (and the GPUs) Ray gave it.

Ray reserves the part's bundle and starts this actor in it; the actor reads which GPUs Ray
assigned (`ray.get_gpu_ids()`), starts the part's command with exactly those in
``CUDA_VISIBLE_DEVICES`` (none: an empty value, so a CPU part never touches a GPU), in a
session of its own so that `stop` ends the whole tree (torchrun's ranks, vLLM's workers), and
keeps its output in a log the launcher reads back in pieces (`read_log`), whatever node it is on.

This module is shipped to the workers by value (it imports nothing of the project), so a node
needs Ray and Python, and the project only for the command the part runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

LOOPBACK = "127.0.0.1"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Health checks go straight to the part, whatever proxy the environment names."""


def free_port(host: str) -> int:
    """A port nobody listens on at `host` now (the part binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ProcessHost:
    """One part's process: started, checked for health, read, and stopped on request."""

    def __init__(self, name: str) -> None:
        import ray

        self.name = name
        self.gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
        self.node_ip = ray.util.get_node_ip_address()
        self.directory = tempfile.mkdtemp(prefix=f"espl-launch-{name}-")
        self.log_path = os.path.join(self.directory, "output.log")
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def placement(self) -> dict[str, Any]:
        """Where Ray put this part: its node's address and the GPU ids it holds there."""
        return {"name": self.name, "node_ip": self.node_ip, "gpu_ids": list(self.gpu_ids), "actor_pid": os.getpid()}

    def start(self, command: list[str], env: dict[str, str], cwd: str | None, bind: str, threads: int) -> dict[str, Any]:
        """Start the part; in `command`, ``{python}`` becomes this node's Python (the one Ray runs
        on), ``{host}`` and ``{port}`` its bind address (loopback or this node's) and a free port
        there. `cwd` where it exists on this node (else the actor's own); `threads`: its OpenMP
        threads (the CPUs reserved)."""
        host = LOOPBACK if bind == "loopback" else self.node_ip
        listens = any("{port}" in arg for arg in command)
        port = free_port(host) if listens else None
        fill = {"{python}": sys.executable, "{host}": host, "{port}": str(port)}
        argv = [_filled(arg, fill) for arg in command]
        environment = {**os.environ, "OMP_NUM_THREADS": str(max(threads, 1)), **env,
                       "CUDA_VISIBLE_DEVICES": ",".join(self.gpu_ids)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=environment, cwd=cwd if cwd and os.path.isdir(cwd) else None,
                                            start_new_session=True)
        self.url = f"http://{host}:{port}" if listens else None
        return {"pid": self.process.pid, "url": self.url, "command": argv,
                "cuda_visible_devices": environment["CUDA_VISIBLE_DEVICES"]}

    def wait_healthy(self, path: str, timeout: float) -> dict[str, Any]:
        """Poll ``GET <url><path>`` from this node until it answers 200: {"ok": True, "seconds"},
        or {"ok": False, "error"} when the process ends first or `timeout` seconds pass."""
        assert self.process is not None and self.url is not None, "start the part first"
        started = time.monotonic()
        while True:
            code = self.process.poll()
            if code is not None:
                return {"ok": False, "error": f"{self.name} exited with code {code} before {path} answered; "
                                              f"end of its log:\n{self.tail()}"}
            try:
                with NO_PROXY.open(self.url + path, timeout=5) as response:
                    if response.status == 200:
                        return {"ok": True, "seconds": round(time.monotonic() - started, 1)}
            except (urllib.error.URLError, OSError):
                pass  # not listening yet, or not ready
            if time.monotonic() - started > timeout:
                return {"ok": False, "error": f"{self.name}: {self.url}{path} did not answer 200 within {timeout:g} s; "
                                              f"end of its log:\n{self.tail()}"}
            time.sleep(0.5)

    def poll(self) -> int | None:
        """The process's exit code, None while it runs."""
        return None if self.process is None else self.process.poll()

    def read_log(self, offset: int, limit: int = 1 << 20) -> tuple[bytes, int]:
        """Up to `limit` bytes of output from `offset`, and the offset to read from next."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                chunk = log.read(limit)
        except FileNotFoundError:
            return b"", offset
        return chunk, offset + len(chunk)

    def tail(self, lines: int = 20) -> str:
        """The last `lines` lines of output (for an error message)."""
        try:
            size = os.path.getsize(self.log_path)
        except FileNotFoundError:
            return ""
        chunk, _ = self.read_log(max(size - 8192, 0), 8192)
        return "\n".join(chunk.decode(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float) -> dict[str, Any]:
        """End the part's whole process group: SIGTERM, then SIGKILL after `grace` seconds."""
        if self.process is None:
            return {"pid": None, "returncode": None}
        pid = self.process.pid
        if self.process.poll() is None:
            _signal_group(pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(pid, signal.SIGKILL)  # what is left of the group: torchrun's ranks, vLLM's workers
        self.process.wait()
        return {"pid": pid, "returncode": self.process.returncode}

    def cleanup(self) -> None:
        """Remove the log folder this actor made (after the launcher has read it)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def _filled(arg: str, fill: dict[str, str]) -> str:
    for placeholder, value in fill.items():
        arg = arg.replace(placeholder, value)
    return arg


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)  # the part leads its own session, so its group id is its pid
    except (ProcessLookupError, PermissionError):
        pass
