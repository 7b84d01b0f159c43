"""Each part's output, copied from its node into the launch's log folder as it grows.

A part's process writes to a file on whatever node Ray put it; the launcher asks each actor
for what is new (`ProcessHost.read_log`) and appends it to ``<log_dir>/<part>.log`` here, so
every log of a multi-node launch ends up in one folder. Parts named in `echo` (the trainer)
are also written to the terminal, where the run shows its progress.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import IO, Any


class LogPump:
    def __init__(self, log_dir: Path, echo: set[str], stream: IO[str] | None, call_timeout: float) -> None:
        self.log_dir = log_dir
        self.echo = echo
        self.stream = stream
        self.call_timeout = call_timeout
        self.actors: dict[str, Any] = {}
        self.offsets: dict[str, int] = {}
        self.files: dict[str, IO[bytes]] = {}
        self.decoders: dict[str, Any] = {}

    def path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def add(self, name: str, actor: Any) -> None:
        self.actors[name] = actor
        self.offsets[name] = 0
        self.files[name] = self.path(name).open("ab")
        self.decoders[name] = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def pump(self) -> None:
        """Copy what each part wrote since the last call (a part that does not answer is skipped)."""
        import ray

        refs = {name: actor.read_log.remote(self.offsets[name]) for name, actor in self.actors.items()}
        for name, ref in refs.items():
            try:
                chunk, self.offsets[name] = ray.get(ref, timeout=self.call_timeout)
            except (ray.exceptions.RayError, TimeoutError):
                continue
            if not chunk:
                continue
            self.files[name].write(chunk)
            self.files[name].flush()
            if name in self.echo and self.stream is not None:
                self.stream.write(self.decoders[name].decode(chunk))
                self.stream.flush()

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()
