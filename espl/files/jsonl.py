"""JSON Lines logs that survive a killed run: the one record file type of a run directory.

`metrics.jsonl`, `rollouts.jsonl` and `prompts.jsonl` are all a `JsonlLog`. Appends are one
write of whole lines, flushed and fsynced, so a kill loses at most the batch in flight and
can only leave a torn *last* line. Reading skips such a line; any other malformed line is
damage, not a kill, and raises. On resume the log is cut back to the checkpoint's iteration
(`truncate_after`), by writing the kept lines to a temporary file that replaces the log.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def dumps(record: Any) -> str:
    """One record as one line (non-JSON values such as paths written as strings)."""
    return json.dumps(record, ensure_ascii=False, default=str)


class JsonlLog:
    """An append-only file of one JSON object per line."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists()

    def append(self, records: Iterable[Any]) -> None:
        """Append whole lines in one write, then flush and fsync."""
        text = "".join(dumps(record) + "\n" for record in records)
        if not text:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record in order; a torn last line is skipped, a bad line elsewhere raises."""
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                if number == len(lines):
                    return  # torn by a killed run; everything before it is intact
                raise ValueError(f"{self.path}:{number}: malformed line: {error}") from error

    def has_torn_tail(self) -> bool:
        """Whether the last line is an incomplete record (a write cut short by a kill)."""
        if not self.path.exists():
            return False
        data = self.path.read_bytes().rstrip(b"\n")
        if not data:
            return False
        try:
            json.loads(data[data.rfind(b"\n") + 1 :])
        except json.JSONDecodeError:
            return True
        return False

    def repair(self) -> None:
        """Make the file end with a newline: cut a torn last line, or close a whole one."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        try:
            json.loads(data[cut:])
        except json.JSONDecodeError:
            with self.path.open("r+b") as handle:
                handle.truncate(cut)
        else:
            with self.path.open("ab") as handle:
                handle.write(b"\n")

    def truncate_after(self, value: int, key: str = "iteration") -> None:
        """Keep only records whose `key` is at most `value` (a torn last line goes too)."""
        if not self.path.exists():
            return
        kept = [record for record in self.read() if int(record.get(key, -1)) <= value]
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(dumps(record) + "\n" for record in kept), encoding="utf-8")
        os.replace(tmp, self.path)
