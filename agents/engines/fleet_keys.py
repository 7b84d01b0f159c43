"""Routing keys that keep a group's samples and an episode's turns together.

The engine sees token ids, not task or prompt ids, but the ids say enough: a group's samples
are copies of one first-turn prompt (the task rendered under one system prompt), so the hash
of those ids names the (task, system prompt) pair; and a later turn's prompt is the previous
prompt, plus what the policy sampled, plus the env's reply, so it starts with a sequence the
fleet has already answered. A prompt takes the key of the longest remembered sequence it
starts with, else the hash of its own ids: all turns of an episode share its first turn's key.

Sequences are remembered until `forget` (the rollout driver's `release_turns`, once every
episode of a batch has ended), at most `max_sequences` of them (oldest dropped first; a
dropped one only costs a prefix-cache miss).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any


def ids_key(ids: Sequence[int]) -> str:
    """A short stable name for a token sequence."""
    return hashlib.blake2b(json.dumps(list(ids)).encode(), digest_size=12).hexdigest()


def prompt_key(prompt: Any) -> str:
    """The key of a prompt never seen before (token ids, or a conversation as JSON)."""
    if prompt and all(isinstance(t, int) for t in prompt):
        return ids_key(prompt)
    return hashlib.blake2b(json.dumps(prompt, sort_keys=True).encode(), digest_size=12).hexdigest()


class ConversationKeys:
    """Remembered sequences (by length, then ids) and the key each was answered under."""

    def __init__(self, max_sequences: int = 8192) -> None:
        self.max_sequences = max_sequences
        self._by_length: dict[int, dict[tuple[int, ...], str]] = {}
        self._order: OrderedDict[tuple[int, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    def key_for(self, prompt: Any) -> str:
        """The key of the longest remembered sequence `prompt` starts with, else its own."""
        if prompt and all(isinstance(t, int) for t in prompt):
            with self._lock:
                for length in sorted((n for n in self._by_length if n <= len(prompt)), reverse=True):
                    key = self._by_length[length].get(tuple(prompt[:length]))
                    if key is not None:
                        return key
        return prompt_key(prompt)

    def remember(self, sequence: Sequence[int], key: str) -> None:
        """`sequence` (a prompt plus what was sampled after it) continues under `key`."""
        ids = tuple(sequence)
        with self._lock:
            self._by_length.setdefault(len(ids), {})[ids] = key
            self._order[ids] = None
            self._order.move_to_end(ids)
            while len(self._order) > self.max_sequences:
                oldest, _ = self._order.popitem(last=False)
                bucket = self._by_length[len(oldest)]
                bucket.pop(oldest, None)
                if not bucket:
                    del self._by_length[len(oldest)]

    def forget(self) -> None:
        with self._lock:
            self._by_length.clear()
            self._order.clear()

    def __len__(self) -> int:
        return len(self._order)
