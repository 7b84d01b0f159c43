"""Stop-string detection on a completion that grows one token at a time.

The completion's text is always the decoded token ids (special tokens skipped), so the ids
the engine returns decode exactly to the text it returns. Generation stops at the first step
whose new token completes any stop string; that token is kept. A token can run past the end
of the stop string (a BPE token such as ``>\\n`` completing ``</search>``): the extra
characters stay in the text, because cutting them would make text and ids disagree, and
training uses the ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_UNSTABLE_TAIL = 4
"""Characters at the end of a decoding that may still change (a partial UTF-8 sequence
decodes to U+FFFD until its last byte arrives), rescanned on the next step."""


@dataclass
class StopScanner:
    """Scans one sequence's decoded text for the earliest-ending stop string."""

    tokenizer: Any
    stops: Sequence[str]
    _scanned_upto: int = 0

    def __post_init__(self) -> None:
        self.stops = tuple(s for s in self.stops if s)
        self._longest = max((len(s) for s in self.stops), default=0)

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def scan(self, token_ids: Sequence[int]) -> str | None:
        """The stop string that the text of `token_ids` now contains (earliest end first), if any."""
        if not self.stops:
            return None
        text = self.decode(token_ids)
        start = max(0, self._scanned_upto - self._longest - _UNSTABLE_TAIL)
        best: tuple[int, str] | None = None
        for stop in self.stops:
            at = text.find(stop, start)
            if at >= 0 and (best is None or at + len(stop) < best[0]):
                best = (at + len(stop), stop)
        self._scanned_upto = len(text)
        return None if best is None else best[1]
