"""Finding the JSON value in an LLM reply, with a few cheap repairs and hard bounds.

Replies come from small models and sometimes from hostile text, so extraction is bounded:
only the first `MAX_REPLY_CHARS` characters are looked at, at most `MAX_CANDIDATES` start
positions are tried, and values nested deeper than `MAX_DEPTH` are refused before `json`
ever recurses into them. Repairs are limited to what small models commonly get wrong and
what cannot turn prose into data: trailing commas, and single-quoted strings. (The
`json-repair` package was considered and not used: it turns almost any text into some JSON
value, and here a reply that is not JSON must stay "no edits".)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

MAX_REPLY_CHARS = 32_000
MAX_CANDIDATES = 16
MAX_DEPTH = 6

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|js|javascript)?[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[\]}])")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class Extracted:
    """The JSON array or object found in a reply, or why there is none."""

    value: Any = None
    error: str | None = None
    source: str = ""
    """'fenced' or 'bare': where the value was found."""
    clipped: bool = False

    @property
    def found(self) -> bool:
        return self.error is None


def extract_json(reply: object, *, stopped: bool = False) -> Extracted:
    """The last valid JSON array or object in a fenced block, else the last complete one in the
    text: a reply may reason first and quote examples before it gives its answer.

    Only whole bracketed spans are tried, never the pieces inside a span that failed to parse:
    a truncated list of edits must not be salvaged as its first edit alone. The one exception
    is `stopped`: the reply ended at a stop string (the caller's `]` + fence, which a server
    that is not vLLM strips from the text), so a final fenced list that lacks only its
    closing bracket after a complete item is closed.
    """
    if not isinstance(reply, str):
        return Extracted(error=f"the reply is a {type(reply).__name__}, not text")
    clipped = len(reply) > MAX_REPLY_CHARS
    text = reply[:MAX_REPLY_CHARS]
    if not text.strip():
        return Extracted(error="the reply is empty", clipped=clipped)
    last_error = "no JSON array or object in the reply"
    found: Extracted | None = None
    tried = 0
    for match in _FENCE.finditer(text):
        if tried >= MAX_CANDIDATES:
            break
        tried += 1
        block = match.group(1).strip()
        start = _first_bracket(block, 0)
        if start < 0:
            continue
        value, error, end = _decode_at(block, start)
        if error is not None and stopped and end < 0 and match.end() == len(text):
            value, error = _closed_by_stop(block, start, error)
        if error is None:
            found = Extracted(value=value, source="fenced", clipped=clipped)
        else:
            last_error = error
    if found is not None:
        return found
    position = _first_bracket(text, 0)
    while position >= 0 and tried < MAX_CANDIDATES:
        tried += 1
        value, error, end = _decode_at(text, position)
        if error is None:
            found = Extracted(value=value, source="bare", clipped=clipped)
        else:
            last_error = error
        if end < 0:  # unclosed: a truncated value, whose inner pieces are not the answer either
            break
        position = _first_bracket(text, end + 1)
    return found or Extracted(error=last_error, clipped=clipped)


def _closed_by_stop(block: str, start: int, error: str) -> tuple[Any, str | None]:
    """A list cut right after a complete item by the stop string `]` + fence, closed again."""
    body = block[start:].rstrip()
    if not (body.startswith("[") and body.endswith("}")):
        return None, error
    value, closed_error, _ = _decode_at(body + "]", 0)
    return (value, None) if closed_error is None else (None, error)


def _first_bracket(text: str, start: int) -> int:
    positions = [p for p in (text.find("[", start), text.find("{", start)) if p >= 0]
    return min(positions) if positions else -1


def _decode_at(text: str, start: int) -> tuple[Any, str | None, int]:
    """(value, error, end of the bracketed span) for the value at `start`; repairs if needed.

    Trailing prose after the value is ignored.
    """
    end, depth = scan_value(text, start)
    if depth > MAX_DEPTH:
        return None, f"JSON nested deeper than {MAX_DEPTH} levels", -1
    try:
        value, _ = _DECODER.raw_decode(text, start)
        return value, None, end
    except (ValueError, RecursionError) as error:
        first_error = f"invalid JSON: {error}"
    if end < 0:
        return None, first_error, end
    try:
        return json.loads(repair(text[start : end + 1])), None, end
    except (ValueError, RecursionError):
        return None, first_error, end


_SPECIAL = re.compile(r"[\\\"'\[\]{}]")


def scan_value(text: str, start: int, max_depth: int = MAX_DEPTH) -> tuple[int, int]:
    """(index of the bracket closing the one at `start` or -1, deepest nesting seen).

    Strings in either quote style are skipped. The scan stops early once `max_depth` is
    exceeded, so a hostile `[[[[...` costs only a few steps. Only the special characters are
    visited (a regex jumps between them), which keeps long replies cheap.
    """
    depth = deepest = 0
    in_string: str | None = None
    skip_to = -1
    for match in _SPECIAL.finditer(text, start):
        index = match.start()
        if index < skip_to:
            continue
        ch = match.group()
        if in_string:
            if ch == "\\":
                skip_to = index + 2
            elif ch == in_string:
                in_string = None
        elif ch == '"' or (ch == "'" and _opens_quoted(text, index)):
            in_string = ch
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                return -1, deepest
        elif ch in "]}":
            depth -= 1
            if depth <= 0:
                return index, deepest
    return -1, deepest


def _opens_quoted(text: str, index: int) -> bool:
    """Whether the single quote at `index` starts a string (it follows `[`, `{`, `,` or `:`),
    rather than being an apostrophe in prose such as "the agent's answer"."""
    before = text[max(0, index - 64) : index].rstrip()
    return not before or before[-1] in "[{,:"


def nesting_depth(text: str, start: int = 0) -> int:
    """Deepest bracket nesting of the value starting at `start` (stops past `MAX_DEPTH`)."""
    return scan_value(text, start)[1]


def repair(snippet: str) -> str:
    """Rewrite single-quoted strings as JSON strings and drop trailing commas."""
    out: list[str] = []
    index = 0
    length = len(snippet)
    while index < length:
        ch = snippet[index]
        if ch == '"':
            end = _string_end(snippet, index, '"')
            out.append(snippet[index:end])
            index = end
        elif ch == "'" and _opens_quoted(snippet, index):
            end = _string_end(snippet, index, "'")
            body = snippet[index + 1 : end - 1].replace("\\'", "'")
            out.append(json.dumps(body))
            index = end
        else:
            out.append(ch)
            index += 1
    return _TRAILING_COMMA.sub(r"\1", "".join(out))


def _string_end(text: str, start: int, quote: str) -> int:
    """Index just past the string that opens at `start` (or the end of text if unterminated)."""
    index = start + 1
    while index < len(text):
        ch = text[index]
        if ch == "\\":
            index += 2
            continue
        if ch == quote:
            return index + 1
        index += 1
    return len(text)
