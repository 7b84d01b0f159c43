"""Cheap answer extraction in the calling process, before anything reaches math-verify.

A reasoning reply can be tens of kilobytes; math-verify only needs its final answer. Taking
the content of the last ``\\boxed{...}`` here (a bounded brace scan, no regex over the whole
reply) keeps the work sent to the verifier small and makes "the last boxed answer counts" an
explicit rule. Replies without a box fall back to their tail, where math-verify's own
LaTeX and plain-expression extraction looks for a final answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

BOXED_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
BRACE = re.compile(r"\\[{}]|[{}]")
PLAIN_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,14}|[1-9][0-9]{0,2}(?:,[0-9]{3}){1,4})")
"""An integer that math-verify reads as exactly that integer: an optional leading minus, no
leading zeros, at most 15 digits, either ungrouped ("1234") or in comma-grouped thousands
("1,234", which latex2sympy reads as a number, not a set). Anything else (spaces, "+5",
"007", "1,23", decimals) is left to math-verify."""

DEFAULT_MAX_ANSWER_CHARS = 1_000
DEFAULT_TAIL_CHARS = 800


class AnswerKind(str, Enum):
    BOXED = "boxed"  # the content of the last \boxed{...}
    TAIL = "tail"  # no box: the end of the reply, for math-verify's own extraction
    EMPTY = "empty"  # nothing to judge
    TOO_LONG = "too_long"  # the final box holds more than the answer limit


@dataclass(frozen=True)
class Candidate:
    """What the verifier should judge for one reply."""

    kind: AnswerKind
    text: str

    def for_math_verify(self) -> str:
        """The string handed to `math_verify.parse`."""
        return f"\\boxed{{{self.text}}}" if self.kind is AnswerKind.BOXED else self.text


def _box_end(text: str, open_brace: int, limit: int) -> int | None:
    """Index of the brace closing `text[open_brace]`, scanning at most `limit` characters.

    Escaped braces (``\\{``, ``\\}``, as in LaTeX sets) do not count. Returns None when the
    box is not closed inside the window.
    """
    depth = 0
    window_end = min(len(text), open_brace + limit + 2)
    for match in BRACE.finditer(text, open_brace, window_end):
        token = match.group()
        if token == "{":
            depth += 1
        elif token == "}":
            depth -= 1
            if depth == 0:
                return match.start()
    return None


def last_boxed(text: str, max_chars: int = DEFAULT_MAX_ANSWER_CHARS) -> Candidate | None:
    """The content of the last closed ``\\boxed{...}``, or None if the reply has none.

    "Last" means the last opening ``\boxed{``, so for nested boxes the innermost of the final
    one is taken (math-verify unwraps nested boxes the same way). An unclosed box (a reply cut
    off by the token limit) is skipped in favour of an earlier closed one. A box whose content
    runs past `max_chars` is `TOO_LONG`: we refuse it rather than send megabytes of nesting to
    a parser. Each box costs at most `max_chars` of scanning, and only boxes starting within
    `max_chars` of the end can be unclosed-and-skipped, so the work is bounded.
    """
    starts = [m.end() - 1 for m in BOXED_START.finditer(text)]
    for open_brace in reversed(starts):
        end = _box_end(text, open_brace, max_chars)
        if end is not None:  # closed inside the window, so at most `max_chars` long
            return Candidate(AnswerKind.BOXED, text[open_brace + 1 : end].strip())
        if len(text) - open_brace - 1 > max_chars:
            return Candidate(AnswerKind.TOO_LONG, text[open_brace + 1 : open_brace + 81])
    return None


def answer_candidate(
    reply: str,
    *,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
    tail_chars: int = DEFAULT_TAIL_CHARS,
) -> Candidate:
    """Reduce a model reply to the part the verifier judges (see the module docstring)."""
    if not isinstance(reply, str):
        reply = str(reply)
    boxed = last_boxed(reply, max_answer_chars)
    if boxed is not None:
        return boxed if boxed.text or boxed.kind is AnswerKind.TOO_LONG else Candidate(AnswerKind.EMPTY, "")
    tail = reply[-tail_chars:].strip()
    return Candidate(AnswerKind.TAIL, tail) if tail else Candidate(AnswerKind.EMPTY, "")


def plain_integer(text: str) -> int | None:
    """`text` as an int when it is a plain integer in the sense of `PLAIN_INTEGER`, else None."""
    text = text.strip()
    return int(text.replace(",", "")) if PLAIN_INTEGER.fullmatch(text) else None
