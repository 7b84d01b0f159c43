"""The driver's end of the worker protocol: start a worker, ask for steps, collect its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).resolve().parent


class WorkerError(RuntimeError):
    pass


class StepWorker:
    """One worker process; `step()` returns its report with `wall_s`, the round trip we timed."""

    def __init__(self, script: str, *args: str) -> None:
        self.name = script
        self._log = tempfile.NamedTemporaryFile(prefix=f"{Path(script).stem}-", suffix=".log", delete=False)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._process = subprocess.Popen(
            [sys.executable, str(WORKERS / script), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, cwd=ROOT, env=env,
        )
        self.ready = self._expect("ready")
        self.steps: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None

    def step(self) -> dict[str, Any]:
        started = time.perf_counter()
        self._send("step")
        report = self._expect("step")
        report["wall_s"] = time.perf_counter() - started
        self.steps.append(report)
        return report

    def stop(self) -> dict[str, Any]:
        if self.final is None:
            self._send("stop")
            self.final = self._expect("done")
            self._process.wait(timeout=120)
        return self.final

    def kill(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def log_tail(self, chars: int = 4000) -> str:
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def _send(self, command: str) -> None:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        except BrokenPipeError as error:
            raise WorkerError(f"{self.name} exited early:\n{self.log_tail()}") from error

    def _expect(self, event: str) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            raise WorkerError(f"{self.name} exited with {self._process.returncode} before '{event}':\n{self.log_tail()}")
        message = json.loads(line)
        if message.get("event") != event:
            raise WorkerError(f"{self.name} sent {message!r}, expected '{event}'")
        return message

    def __enter__(self) -> StepWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        Path(self._log.name).unlink(missing_ok=True)
