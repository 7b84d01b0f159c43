"""The evolving system prompt: an ordered list of principles plus its provenance.

A principle's number (`G0`, `G1`, ...) is its position: every edit renumbers the list, so the
numbers are rendered from positions and ignored when text is parsed back. Keeping the prompt as
a list (not free text) is what lets the mutation and crossover operators address single
principles with `add` / `modify` / `remove` edits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_PRINCIPLE_WORDS = 32
"""Word cap for one principle (the E-SPL paper's revision rule)."""

MAX_TOTAL_WORDS = 1200
"""Default cap on the whole list, so the system prompt cannot crowd out the task context."""

SEED_OPERATOR = "seed"
MUTATION_OPERATOR = "mutation"
CROSSOVER_OPERATOR = "crossover"


class PromptParseError(ValueError):
    """Raised when text holds no numbered principle; operators turn it into 'no child'."""


@dataclass(frozen=True)
class RatingPoint:
    """One entry of a prompt's rating history: its TrueSkill belief after `event` at `step`."""

    step: int
    mu: float
    sigma: float
    event: str = "match"

    def to_record(self) -> list[Any]:
        return [self.step, self.mu, self.sigma, self.event]

    @classmethod
    def from_record(cls, record: Sequence[Any]) -> RatingPoint:
        step, mu, sigma, event = record
        return cls(step=int(step), mu=float(mu), sigma=float(sigma), event=str(event))


@dataclass
class SystemPrompt:
    """A rated member of the prompt population.

    `principles` is immutable (a new text is a new prompt with its own id); only the rating
    history and the eviction mark change after creation.
    """

    id: str
    principles: tuple[str, ...]
    parents: tuple[str, ...] = ()
    operator: str = SEED_OPERATOR
    created_step: int = 0
    header: str | None = None
    rating_history: list[RatingPoint] = field(default_factory=list)
    evicted_step: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.principles = tuple(self.principles)
        self.parents = tuple(self.parents)
        if not self.id:
            raise ValueError("a system prompt needs a non-empty id")

    @property
    def text(self) -> str:
        """The system prompt exactly as the policy sees it."""
        return render_principles(self.principles, header=self.header)

    @property
    def rating(self) -> RatingPoint | None:
        return self.rating_history[-1] if self.rating_history else None

    @property
    def mu(self) -> float:
        return self._require_rating().mu

    @property
    def sigma(self) -> float:
        return self._require_rating().sigma

    def _require_rating(self) -> RatingPoint:
        if not self.rating_history:
            raise LookupError(f"prompt {self.id!r} has no rating yet")
        return self.rating_history[-1]

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict; `from_record` inverts it exactly."""
        return {
            "id": self.id,
            "principles": list(self.principles),
            "parents": list(self.parents),
            "operator": self.operator,
            "created_step": self.created_step,
            "header": self.header,
            "rating_history": [point.to_record() for point in self.rating_history],
            "evicted_step": self.evicted_step,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> SystemPrompt:
        return cls(
            id=str(record["id"]),
            principles=tuple(str(p) for p in record["principles"]),
            parents=tuple(str(p) for p in record.get("parents", ())),
            operator=str(record.get("operator", SEED_OPERATOR)),
            created_step=int(record.get("created_step", 0)),
            header=record.get("header"),
            rating_history=[RatingPoint.from_record(r) for r in record.get("rating_history", ())],
            evicted_step=record.get("evicted_step"),
            metadata=dict(record.get("metadata") or {}),
        )


# ---------------------------------------------------------------------------------------------
# Rendering and parsing


def principle_label(index: int) -> str:
    return f"G{index}"


def render_principles(principles: Iterable[str], header: str | None = None) -> str:
    """Render `G0: ...` lines, one principle per line, below an optional header."""
    lines = [f"{principle_label(i)}: {_one_line(p)}" for i, p in enumerate(principles)]
    if header and header.strip():
        lines.insert(0, header.strip())
    return "\n".join(lines)


# A numbered line: optional bullet / bold / bracket, then `G3` or a bare `3`, then a separator.
_NUMBERED_LINE = re.compile(
    r"""^\s*(?:[-*•]\s+)?(?P<bold>\*\*|__)?\[?    # optional bullet, bold, bracket
        (?:G\s*(?P<g>\d+)\]?(?:\*\*|__)?\s*(?:[:.)\-]\s*|\s+)   # G3: / G3. / [G3] / G3 -
          |(?P<n>\d+)\]?(?:\*\*|__)?\s*[.):]\s+)          # 3. / 3) / 3:
        (?:(?P=bold)\s*)?                                  # bold closed after the separator
        (?P<body>\S.*)$""",
    re.VERBOSE | re.IGNORECASE,
)


@dataclass(frozen=True)
class ParsedPrompt:
    header: str | None
    principles: tuple[str, ...]


def parse_principles(text: str) -> ParsedPrompt:
    """Parse a numbered list back into principles, renumbering them by position.

    Lines before the first numbered line form the header; an unnumbered line after a principle
    continues it (LLMs wrap long lines). `G<n>` labels are preferred: when any line carries one,
    bare `1.`-style lines are treated as continuation text, so a principle that itself holds a
    short enumerated list is not split apart.
    """
    lines = text.splitlines()
    matches = [_NUMBERED_LINE.match(line) for line in lines]
    uses_g_labels = any(m is not None and m.group("g") is not None for m in matches)
    header_lines: list[str] = []
    principles: list[str] = []
    for line, match in zip(lines, matches):
        starts_principle = match is not None and (match.group("g") is not None or not uses_g_labels)
        if starts_principle:
            assert match is not None
            principles.append(match.group("body").strip())
        elif not line.strip():
            continue
        elif principles:
            principles[-1] = f"{principles[-1]} {line.strip()}"
        else:
            header_lines.append(line.strip())
    if not principles:
        raise PromptParseError("no numbered principle found in the text")
    header = "\n".join(header_lines) or None
    return ParsedPrompt(header=header, principles=tuple(_one_line(p) for p in principles))


def _one_line(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------------------------------------
# Length caps


def word_count(text: str) -> int:
    return len(text.split())


def cap_words(text: str, max_words: int = MAX_PRINCIPLE_WORDS) -> str:
    """Keep the first `max_words` whitespace-separated words (normalising whitespace)."""
    if max_words < 1:
        raise ValueError("max_words must be at least 1")
    return " ".join(text.split()[:max_words])


@dataclass(frozen=True)
class PromptLimits:
    """Caps applied to every new prompt: per-principle words, total words, principle count.

    Over-long principles are truncated; when the total is exceeded, whole principles are dropped
    from the end (the earliest principles carry the lineage's oldest, most-tested advice).
    """

    max_principle_words: int = MAX_PRINCIPLE_WORDS
    max_total_words: int | None = MAX_TOTAL_WORDS
    max_principles: int | None = None

    def apply(self, principles: Iterable[str]) -> tuple[str, ...]:
        kept: list[str] = []
        total = 0
        for raw in principles:
            principle = cap_words(raw, self.max_principle_words)
            if not principle:
                continue
            if self.max_principles is not None and len(kept) >= self.max_principles:
                break
            words = word_count(principle)
            if self.max_total_words is not None and total + words > self.max_total_words:
                break
            kept.append(principle)
            total += words
        return tuple(kept)

    def violations(self, principles: Sequence[str]) -> list[str]:
        """Human-readable reasons the list breaks the caps (empty when it fits)."""
        problems = [
            f"{principle_label(i)} has {word_count(p)} words (cap {self.max_principle_words})"
            for i, p in enumerate(principles)
            if word_count(p) > self.max_principle_words
        ]
        total = sum(word_count(p) for p in principles)
        if self.max_total_words is not None and total > self.max_total_words:
            problems.append(f"{total} words in total (cap {self.max_total_words})")
        if self.max_principles is not None and len(principles) > self.max_principles:
            problems.append(f"{len(principles)} principles (cap {self.max_principles})")
        return problems
