"""Read an offline W&B run's `.wandb` file back (its history rows), for the tracking tests.

wandb ships no reader for this file. Its layout, as written by wandb: a 7-byte header (`:W&B`,
magic 0xBEE1, version 0), then LevelDB-log chunks in 32 KiB blocks (each chunk: crc32, length,
type FULL/FIRST/MIDDLE/LAST; a block's tail shorter than a chunk header is padding), each
record a `wandb_internal_pb2.Record` protobuf, decoded with wandb's own generated classes.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HEADER = struct.Struct("<4sHB")
CHUNK = struct.Struct("<IHB")
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> Iterator[bytes]:
    data = path.read_bytes()
    ident, magic, version = HEADER.unpack_from(data, 0)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), (ident, magic, version)
    offset, pending = HEADER.size, b""
    while offset + CHUNK.size <= len(data):
        left_in_block = BLOCK - offset % BLOCK
        if left_in_block < CHUNK.size:
            offset += left_in_block
            continue
        _, length, kind = CHUNK.unpack_from(data, offset)
        body = data[offset + CHUNK.size: offset + CHUNK.size + length]
        if len(body) < length:
            break  # a chunk still being written
        offset += CHUNK.size + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
        else:
            break  # zero padding at the end of the file


def _kinds(path: Path) -> list[str]:
    from wandb.proto import wandb_internal_pb2

    out = []
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        out.append(record.WhichOneof("record_type"))
    return out


def wait_closed(path: Path, timeout_s: float = 60.0) -> Path:
    """`path` once its `exit` record is on disk: `run.finish()` returns before wandb's writer
    process has necessarily flushed the file's last records."""
    deadline = time.monotonic() + timeout_s
    while "exit" not in _kinds(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} has no exit record after {timeout_s} s")
        time.sleep(0.2)
    return path


def history(path: Path) -> dict[int, dict[str, Any]]:
    """Step -> {key: value} of every history row (nested keys joined with `/`)."""
    from wandb.proto import wandb_internal_pb2

    rows: dict[int, dict[str, Any]] = {}
    for raw in records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") != "history":
            continue
        row = rows.setdefault(record.history.step.num, {})
        for item in record.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
    return rows
