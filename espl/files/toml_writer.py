"""A small TOML writer for plain data: what `tomllib` reads back to the same values.

The standard library reads TOML but does not write it, and a resolved run config needs only
strings, integers, floats, booleans, lists and tables. TOML has no null: a None anywhere is
refused with its dotted name, so the caller decides what an absent value means.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class TomlWriteError(ValueError):
    """A value TOML cannot hold (None, or a type it has no literal for)."""


def dumps(data: Mapping[str, Any]) -> str:
    """`data` as a TOML document: scalars and lists of a table first, then its sub-tables."""
    lines: list[str] = []
    _table(data, [], lines)
    return "\n".join(lines).strip("\n") + "\n"


def _table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping) and v}
    for key, value in data.items():
        if key not in tables:
            lines.append(f"{key_text(key)} = {value_text(value, [*path, key])}")
    for key, value in tables.items():
        lines += ["", "[" + ".".join(key_text(k) for k in [*path, key]) + "]"]
        _table(value, [*path, key], lines)


def key_text(key: str) -> str:
    if not isinstance(key, str):
        raise TomlWriteError(f"TOML keys are strings, got {key!r}")
    return key if BARE_KEY.fullmatch(key) else string_text(key)


def value_text(value: Any, path: Sequence[str]) -> str:
    name = ".".join(path)
    if value is None:
        raise TomlWriteError(f"{name} is None, which TOML cannot express")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, str):
        return string_text(value)
    if isinstance(value, Mapping):  # an empty table, or a table inside a list
        items = (f"{key_text(k)} = {value_text(v, [*path, str(k)])}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(value_text(v, [*path, f"[{i}]"]) for i, v in enumerate(value)) + "]"
    raise TomlWriteError(f"{name}: TOML has no literal for {type(value).__name__} {value!r}")


def string_text(text: str) -> str:
    """A basic (double-quoted) string; control characters escaped as TOML requires."""
    out = []
    for char in text:
        if char in ESCAPES:
            out.append(ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _float_text(value: float) -> str:
    """`repr` gives the shortest text that reads back to the same float; TOML spells the
    special values inf and nan, and needs a dot or an exponent to tell a float from an int."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = repr(value)
    return text if any(c in text for c in ".eE") else text + ".0"
