"""The Search-R1 text protocol: parsing an agent's reply and rendering search results.

Parsing rule (Search-R1's): the reply is scanned left to right for a *complete* action tag,
``<search>...</search>`` or ``<answer>...</answer>``, and the one whose opening tag comes first
decides the action. Tags are case-sensitive. Its content runs to the first matching closing tag
and is stripped of surrounding whitespace. Consequences, on purpose:

- ``<think>`` is free text and is ignored, and so is everything after the deciding tag.
- An opening tag without its closing tag does not count, and the scan goes on past it:
  ``<search>x <answer>y</answer>`` is the answer ``y``.
- With both tags complete, the earlier one wins.
- Nesting is not parsed: ``<search>a <answer>b</answer> c</search>`` is a search for the
  whole inner text.
- An empty or blank search query is an invalid action (there is nothing to search for); an
  empty answer is still an answer (it scores 0).

Observations are ``<information>Doc 1(Title: t) text ...</information>`` and are cut to a
token budget with the closing tag kept (see `truncate_observation`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from envs.retrieval.types import Passage

ACTION_PATTERN = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
INFO_OPEN, INFO_CLOSE = "<information>", "</information>"

ActionKind = Literal["search", "answer", "invalid"]


@dataclass(frozen=True)
class Action:
    """One parsed agent reply. `content` is the query or the answer; `error` says why a reply is invalid."""

    kind: ActionKind
    content: str = ""
    error: str = ""


def parse_action(reply: str) -> Action:
    """Parse an agent reply by Search-R1's rule (see the module docstring)."""
    match = ACTION_PATTERN.search(reply)
    if match is None:
        return Action("invalid", error="no complete <search>...</search> or <answer>...</answer> tag")
    kind, content = match.group(1), match.group(2).strip()
    if kind == "search" and not content:
        return Action("invalid", error="the search query is empty")
    return Action("search" if kind == "search" else "answer", content)


# -- token budgets ---------------------------------------------------------------------------
@runtime_checkable
class Tokenizer(Protocol):
    """The part of a (Hugging Face) tokenizer that token budgets need."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class TokenCounter(Protocol):
    """Counts tokens and cuts text to a number of tokens."""

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str: ...


_WORD = re.compile(r"\S+\s*")


class WordCounter:
    """The approximation used without a tokenizer: one token per whitespace-separated word.

    BPE tokenizers make about 1.3 tokens per English word (more for numbers and names), so
    a budget of N "tokens" lets through somewhat more than N real tokens. Pass the policy's
    tokenizer for exact budgets.
    """

    def count(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        if max_tokens <= 0:
            return ""
        words = _WORD.finditer(text.lstrip())
        return "".join(m.group(0) for _, m in zip(range(max_tokens), words)).rstrip()


class TokenizerCounter:
    """Exact counts with a tokenizer's `encode`/`decode` (special tokens left out when supported)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    def _encode(self, text: str) -> list[int]:
        try:
            return list(self.tokenizer.encode(text, add_special_tokens=False))  # type: ignore[call-arg]
        except TypeError:  # a plain encode(str) without that keyword
            return list(self.tokenizer.encode(text))

    def count(self, text: str) -> int:
        return len(self._encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self._encode(text)
        if len(ids) <= max_tokens:
            return text
        return self.tokenizer.decode(ids[: max(max_tokens, 0)]) if max_tokens > 0 else ""


def token_counter(tokenizer: Any | None = None) -> TokenCounter:
    """A counter for `tokenizer`, or the word approximation when it is None."""
    return WordCounter() if tokenizer is None else TokenizerCounter(tokenizer)


# -- rendering -------------------------------------------------------------------------------
def printable(text: str) -> str:
    """`text` without invisible format characters (zero-width joiners, direction marks).

    Wikipedia text carries them; they mean nothing to the agent, and the observation space
    admits only printable text and whitespace.
    """
    if text.isprintable():
        return text
    return "".join(c for c in text if c.isprintable() or c.isspace())


def render_passages(passages: Sequence[Passage]) -> str:
    """Search-R1's layout: one ``Doc i(Title: t) text`` line per passage, numbered from 1."""
    lines = (f"Doc {i}(Title: {p.title}) {p.text.strip()}" for i, p in enumerate(passages, 1))
    return printable("\n".join(lines))


def truncate_observation(body: str, counter: TokenCounter, max_tokens: int) -> str:
    """``<information>body</information>`` in at most `max_tokens` tokens, closing tag intact.

    The body is cut, never the tags. Token counts of a concatenation can differ from the sum
    of its parts (merges across the seams), so the body's allowance is found by a binary
    search on the measured length of the whole observation: the longest cut that fits. If
    even the bare tags exceed the budget, the bare tags are returned.
    """
    opening, closing = INFO_OPEN, f"\n{INFO_CLOSE}"
    whole = f"{opening}{body}{closing}"
    if counter.count(whole) <= max_tokens:
        return whole
    best = f"{opening}{closing}"
    low, high = 1, min(counter.count(body), max_tokens)
    while low <= high:
        allowance = (low + high) // 2
        candidate = f"{opening}{counter.truncate(body, allowance)}{closing}"
        if counter.count(candidate) <= max_tokens:
            best, low = candidate, allowance + 1
        else:
            high = allowance - 1
    return best


def render_observation(passages: Sequence[Passage], counter: TokenCounter, max_tokens: int) -> str:
    """Passages rendered and wrapped in ``<information>`` tags within the token budget."""
    return truncate_observation(render_passages(passages), counter, max_tokens)
