"""Edits to a principle list, parsed and validated from a reflector reply.

A reply is trusted with nothing: every edit is checked (a known operation, integer indexes
within the list, a principle that is a real sentence) and an invalid edit is dropped with a
recorded reason, so one bad edit does not spoil the others. Principles are cleaned before
they are checked (chat markers and invisible characters removed, `G3:`-style labels and
wrapping quotes stripped, whitespace collapsed).

Over-long principles: by default a principle above the word cap is truncated to its first
`max_words` words (the E-SPL revision rule is "at most 32 words", and a small model that
writes 40 words usually put the rule first and the elaboration after); `overlong="reject"`
drops such edits instead. A single "word" longer than `max_chars` can only be junk, so it is
always rejected.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from espl.evolution.operators.jsonish import extract_json
from espl.evolution.operators.text import one_line, remove_unprintable, strip_chat_markers
from espl.evolution.system_prompt import MAX_PRINCIPLE_WORDS

log = logging.getLogger(__name__)

ADD, MODIFY, REMOVE, MERGE = "add", "modify", "remove", "merge"
ALL_OPS: frozenset[str] = frozenset({ADD, MODIFY, REMOVE, MERGE})
MAX_PRINCIPLE_CHARS = 400
"""A 32-word principle of ordinary words is well under this; more means junk."""
MAX_EVIDENCE_CHARS = 300
MAX_EDITS_PER_REPLY = 64
"""Items beyond this in one reply are ignored (a reply of 10,000 edits is not a plan)."""

_LEADING_LABEL = re.compile(
    r"^\s*(?:[-*\u2022]\s*)?\[?(?:G\s*[0-9]{1,6}|[0-9]{1,6})\]?\s*(?:[:.)]|-)(?=\s)\s*",  # "G3:", "- [2] -", "4)"
    re.IGNORECASE,
)
_INDEX_TEXT = re.compile(r"^\s*G?\s*([0-9]{1,6})\s*$", re.IGNORECASE)
"""ASCII digits only: int() would also read "٣" (Arabic-Indic three) or "３" (full width)."""
_ACTION = re.compile(r"<\s*(answer|search|information|think)\s*>.*?<\s*/\s*\1\s*>", re.IGNORECASE | re.DOTALL)
"""A whole agent action or env reply (Search-R1's tags): one task's answer or query, not a rule."""
_WRAPPING = "\"'`\u201c\u201d\u2018\u2019 "


@dataclass(frozen=True)
class Edit:
    """One change to a principle list; indexes refer to the list the edit was proposed against."""

    op: str
    principle: str | None = None
    index: int | None = None
    indices: tuple[int, ...] = ()
    evidence: str | None = None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"op": self.op}
        if self.index is not None:
            record["index"] = self.index
        if self.indices:
            record["indices"] = list(self.indices)
        if self.principle is not None:
            record["principle"] = self.principle
        if self.evidence is not None:
            record["evidence"] = self.evidence
        return record

    def describe(self) -> str:
        """A one-line, human-readable form (what the revision-plan prompt lists)."""
        if self.op == MODIFY:
            return f"modify G{self.index}: {self.principle}"
        if self.op == REMOVE:
            return f"remove G{self.index}"
        if self.op == MERGE:
            return f"merge {', '.join(f'G{i}' for i in self.indices)}: {self.principle}"
        return f"add: {self.principle}"


@dataclass(frozen=True)
class EditRules:
    """What a valid edit looks like for one operator stage."""

    allowed_ops: frozenset[str]
    n_principles: int
    max_words: int = MAX_PRINCIPLE_WORDS
    max_chars: int = MAX_PRINCIPLE_CHARS
    overlong: Literal["truncate", "reject"] = "truncate"
    require_evidence: bool = False
    max_edits: int | None = None
    """Keep at most this many valid edits (the first ones); None keeps all."""


@dataclass
class ParsedEdits:
    """The valid edits of one reply, the reasons others were dropped, or why none could be read."""

    edits: list[Edit] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    error: str | None = None


def parse_edits(reply: object, rules: EditRules, *, stopped: bool = False) -> ParsedEdits:
    """Valid edits from a reflector reply. Never raises; see the module doc for the rules.

    `stopped`: the reply ended at the stage's stop string, which the server may have cut
    from the text (`jsonish.extract_json`)."""
    extracted = extract_json(reply, stopped=stopped)
    if not extracted.found:
        return ParsedEdits(error=extracted.error)
    items = _edit_items(extracted.value)
    if items is None:
        return ParsedEdits(error=f"the JSON holds a {type(extracted.value).__name__}, not a list of edits")
    parsed = ParsedEdits()
    if extracted.clipped:
        parsed.rejected.append("reply clipped before parsing (too long)")
    if len(items) > MAX_EDITS_PER_REPLY:
        extra = len(items) - MAX_EDITS_PER_REPLY
        parsed.rejected.append(f"{extra} edits beyond the first {MAX_EDITS_PER_REPLY} ignored")
        items = items[:MAX_EDITS_PER_REPLY]
    for position, item in enumerate(items):
        edit, reason = validate_edit(item, rules)
        if edit is None:
            parsed.rejected.append(f"edit {position}: {reason}")
            continue
        if rules.max_edits is not None and len(parsed.edits) >= rules.max_edits:
            parsed.rejected.append(f"edit {position}: more than {rules.max_edits} edits proposed")
            continue
        parsed.edits.append(edit)
    for reason in parsed.rejected:
        log.debug("dropped reflector edit: %s", reason)
    return parsed


def _edit_items(value: Any) -> list[Any] | None:
    """Accept a list of edits, one edit object, or an object wrapping the list."""
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping):
        for key in ("edits", "plan", "operations", "changes", "revisions"):
            wrapped = value.get(key)
            if isinstance(wrapped, list):
                return wrapped
        if "op" in value or "operation" in value:
            return [value]
    return None


def validate_edit(item: Any, rules: EditRules) -> tuple[Edit | None, str]:
    """One edit checked against `rules`, or None and the reason it is invalid."""
    if not isinstance(item, Mapping):
        return None, f"not an object but a {type(item).__name__}"
    op = item.get("op", item.get("operation"))
    if not isinstance(op, str) or op.strip().lower() not in ALL_OPS:
        return None, f"unknown operation {_short(op)}"
    op = op.strip().lower()
    if op not in rules.allowed_ops:
        return None, f"operation {op!r} is not allowed here"
    evidence: str | None = None
    if rules.require_evidence or "evidence" in item:
        evidence = _clean_evidence(item.get("evidence"))
        if rules.require_evidence and not evidence:
            return None, "missing evidence"
    index: int | None = None
    indices: tuple[int, ...] = ()
    if op in (MODIFY, REMOVE):
        index, reason = parse_index(item.get("index"), rules.n_principles)
        if index is None:
            return None, reason
    if op == MERGE:
        indices, reason = _parse_indices(item.get("indices"), rules.n_principles)
        if not indices:
            return None, reason
    principle: str | None = None
    if op != REMOVE:
        principle, reason = clean_principle(item.get("principle", item.get("text")), rules)
        if principle is None:
            return None, reason
    return Edit(op=op, principle=principle, index=index, indices=indices, evidence=evidence), ""


def parse_index(value: Any, n_principles: int) -> tuple[int | None, str]:
    """An index into the list: an int (not a bool or float) or a `"G3"` / `"3"` string, in range."""
    if isinstance(value, bool) or value is None:
        return None, f"index {_short(value)} is not an integer"
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and (match := _INDEX_TEXT.match(value)):
        index = int(match.group(1))
    else:
        return None, f"index {_short(value)} is not an integer"
    if not 0 <= index < n_principles:
        return None, f"index {index} outside G0..G{n_principles - 1}" if n_principles else "the list is empty"
    return index, ""


def _parse_indices(value: Any, n_principles: int) -> tuple[tuple[int, ...], str]:
    if not isinstance(value, list) or not 2 <= len(value) <= max(n_principles, 2):
        return (), "merge needs a list of at least two indexes"
    indices: list[int] = []
    for raw in value:
        index, reason = parse_index(raw, n_principles)
        if index is None:
            return (), reason
        if index in indices:
            return (), f"index {index} listed twice in a merge"
        indices.append(index)
    return tuple(sorted(indices)), ""


def clean_principle(value: Any, rules: EditRules) -> tuple[str | None, str]:
    """A principle fit for the prompt, or None and why the text cannot be one."""
    if not isinstance(value, str):
        return None, f"principle is a {type(value).__name__}, not text"
    text = unicodedata.normalize("NFKC", value[: rules.max_chars * 8])  # full-width letters, ligatures
    text = one_line(remove_unprintable(text, keep_newlines=False).replace("```", " "))
    text = one_line(strip_chat_markers(text))
    if _ACTION.search(text):
        return None, "principle holds an agent action (a tagged answer or search), not a rule"
    for _ in range(3):  # "G2: 'text'" -> "text"
        stripped = _LEADING_LABEL.sub("", text, count=1).strip(_WRAPPING)
        if stripped == text:
            break
        text = stripped
    text = one_line(text)
    if sum(ch.isalpha() for ch in text) < 2:
        return None, "principle has no words"
    words = text.split()
    if any(len(word) > rules.max_chars for word in words):
        return None, "principle holds a junk token longer than the character cap"
    if len(words) > rules.max_words:
        if rules.overlong == "reject":
            return None, f"principle has {len(words)} words (cap {rules.max_words})"
        words = words[: rules.max_words]
    while words and len(" ".join(words)) > rules.max_chars:
        words.pop()
    text = " ".join(words)
    if not is_valid_principle(text, rules.max_words, rules.max_chars):
        return None, "principle has no words, or markup that cannot be cleaned"
    return text, ""


def is_valid_principle(
    text: object, max_words: int = MAX_PRINCIPLE_WORDS, max_chars: int = MAX_PRINCIPLE_CHARS
) -> bool:
    """Whether `text` could stand in a prompt as cleaned by `clean_principle` (used by checks)."""
    if not isinstance(text, str) or not text or text != one_line(text):
        return False
    if strip_chat_markers(text) != text or remove_unprintable(text, keep_newlines=False) != text:
        return False
    return len(text.split()) <= max_words and len(text) <= max_chars and sum(ch.isalpha() for ch in text) >= 2


def _clean_evidence(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = one_line(remove_unprintable(strip_chat_markers(value[: MAX_EVIDENCE_CHARS * 2]), keep_newlines=False))
    return text[:MAX_EVIDENCE_CHARS] or None


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value[: limit * 2] if isinstance(value, str) else value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_edits(edits: Iterable[Edit]) -> list[str]:
    return [edit.describe() for edit in edits]


def records(edits: Sequence[Edit]) -> list[dict[str, Any]]:
    return [edit.to_record() for edit in edits]
