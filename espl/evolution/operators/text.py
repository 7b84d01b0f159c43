"""Text hygiene for everything that goes into a reflector prompt or comes back out of one.

Two dangers drive these helpers. Chat-control markers (`<|im_start|>`, `</s>`, ...) inside a
transcript or a proposed principle are turned into real special tokens when a chat template
is rendered and tokenized, which would let a rollout or a reflector reply forge turns in a
later prompt. And invisible or control characters (NUL, bidi overrides, zero-width joiners)
make principles that look equal differ, or that print as something else. Both are removed.
"""

from __future__ import annotations

import re
import unicodedata

_CHAT_MARKERS = re.compile(
    r"<\|[^<>|\n]{0,64}\|>"  # ChatML / Llama 3 style: <|im_start|>, <|eot_id|>, <|endoftext|>
    r"|</?s>"  # Llama 2 / Mistral sequence markers
    r"|\[/?INST\]"  # Llama 2 instruction markers
    r"|<(?:start|end)_of_turn>"  # Gemma turn markers
    r"|</?(?:bos|eos|pad|unk)>"  # sequence markers spelled as tags (Gemma and others)
    r"|<\uff5c[^<>\n]{0,64}\uff5c>",  # full-width bars used by some templates
    re.IGNORECASE,
)
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEEP_CONTROLS = frozenset("\n\t")


def strip_chat_markers(text: str) -> str:
    """Remove strings a chat template would read as special tokens.

    Repeated until none is left, because removing one marker can join the pieces of another
    (`<|im_<|x|>start|>`); every pass shortens the text, so this ends.
    """
    while True:
        stripped = _CHAT_MARKERS.sub(" ", text)
        if stripped == text:
            return text
        text = stripped


def remove_unprintable(text: str, *, keep_newlines: bool = True) -> str:
    """Replace control, format, private-use, surrogate and unassigned characters by spaces."""
    if text.isprintable():  # fast path: nothing of those categories is printable
        return text
    keep = _KEEP_CONTROLS if keep_newlines else frozenset()
    return "".join(
        ch if ch in keep or unicodedata.category(ch) not in _UNPRINTABLE_CATEGORIES else " " for ch in text
    )


def clean_for_prompt(text: object, max_chars: int) -> str:
    """Safe, bounded text to show the reflector: markers and junk removed, middle clipped."""
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if len(text) > max_chars * 4:  # bound the work below on pathological inputs
        text = clip_middle(text, max_chars * 4)
    text = remove_unprintable(strip_chat_markers(text))
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    return clip_middle(text, max_chars)


def clip_middle(text: str, max_chars: int) -> str:
    """Keep the start and, mostly, the end of `text` (where answers and mistakes show)."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if len(text) <= max_chars:
        return text
    marker = "\n[... middle of the text cut ...]\n"
    room = max(max_chars - len(marker), 0)
    head = room * 2 // 5
    tail = room - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def one_line(text: str) -> str:
    return " ".join(text.split())


_CONFUSABLES = str.maketrans({
    # Cyrillic and Greek letters drawn like Latin ones (lower case; the text is casefolded first)
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t",
    "υ": "u", "χ": "x", "ɡ": "g", "ɑ": "a", "ı": "i", "ʏ": "y",
})


def skeleton(text: str) -> str:
    """What a text looks like, for spotting duplicates: compatibility forms folded (NFKC:
    full-width letters, ligatures), case folded, look-alike Cyrillic and Greek letters read
    as the Latin ones, spacing collapsed. "Reаd carefully" with a Cyrillic "а" and "read
    CAREFULLY" have the same skeleton."""
    folded = unicodedata.normalize("NFKC", text).casefold().translate(_CONFUSABLES)
    return one_line(folded)
