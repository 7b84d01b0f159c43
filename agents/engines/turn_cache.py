"""Reuse of the key/value cache from one turn of a conversation to the next (`hf` engine).

Why: in a multi-turn rollout every turn's prompt is the previous turn's prompt, plus the
tokens the policy sampled, plus the environment's reply. Prefilling the whole conversation
again each turn makes the cost of an episode grow with the square of its length; on CPU it
dominated search rollouts. vLLM gets the same effect from prefix caching; this is the `hf`
engine's equivalent, kept deliberately simple:

* What is kept: for every sequence of the engine's most recent `generate` call, the keys and
  values of its prompt and of the tokens it sampled (all but the last one, which the model
  never consumed), keyed by exactly those token ids. The next call finds, for each prompt,
  the longest kept sequence that is a prefix of it and prefills only the rest.
* When it is dropped: whenever the weights may differ. The key of the store is the adapter
  asked for plus the sum of every parameter's in-place version counter, which any optimizer
  step, adapter load or weight copy bumps. A call with other weights starts empty.
* How much: at most `max_bytes` of keys and values; sequences past the budget are not kept
  (they are prefilled in full next turn, as without reuse).

Reused rows are laid out left-padded in the batch as ``[pad, reused, pad, new]`` with an
attention mask over both pads and explicit position ids, so every token keeps the position it
had when its keys were computed.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

DEFAULT_MAX_BYTES = 2 << 30


def weights_key(model: Any, adapter: Hashable) -> tuple[Hashable, int]:
    """Changes whenever a forward pass could give other keys and values."""
    return adapter, sum(parameter._version for parameter in model.parameters())


@dataclass
class Reused:
    """A kept prefix: `length` tokens with per-layer keys/values of shape [heads, length, dim]."""

    length: int
    keys: list[Tensor]
    values: list[Tensor]


class TurnCache:
    """The last call's per-sequence keys and values, looked up by token prefix."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._weights: tuple[Hashable, int] | None = None
        self._kept: dict[tuple[int, ...], Reused] = {}
        self._next: dict[tuple[int, ...], Reused] = {}
        self._next_bytes = 0
        self.reused_tokens = 0
        """Prompt tokens not prefilled again thanks to the cache (a running count)."""

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def begin(self, weights: tuple[Hashable, int]) -> None:
        """Start a call: forget everything when the weights changed since the last one."""
        if weights != self._weights:
            self._kept = {}
        self._weights = weights
        self._next, self._next_bytes = {}, 0

    def finish(self) -> None:
        """End a call: what this call kept replaces what the previous one kept."""
        self._kept, self._next, self._next_bytes = self._next, {}, 0

    @property
    def kept_sequences(self) -> int:
        return len(self._kept)

    def clear(self) -> None:
        self._weights, self._kept, self._next, self._next_bytes = None, {}, {}, 0

    def lookup(self, prompt_ids: Sequence[int]) -> Reused | None:
        """The longest kept prefix of `prompt_ids`, cut to leave at least one token to prefill."""
        for length in sorted({len(key) for key in self._kept}, reverse=True):
            if length < len(prompt_ids):
                entry = self._kept.get(tuple(prompt_ids[:length]))
                if entry is not None:
                    return entry
        return None

    def keep(self, token_ids: Sequence[int], cache: Any, row: int, columns: Tensor) -> None:
        """Keep row `row` of a live cache, restricted to its real (unpadded) `columns`."""
        layers = cache.layers
        size = sum(2 * layer.keys[row].shape[0] * len(columns) * layer.keys.shape[-1] for layer in layers)
        size *= layers[0].keys.element_size()
        if self._next_bytes + size > self.max_bytes:
            return
        keys = [layer.keys[row][:, columns].clone() for layer in layers]
        values = [layer.values[row][:, columns].clone() for layer in layers]
        self._next[tuple(token_ids)] = Reused(len(columns), keys, values)
        self._next_bytes += size


def supports_reuse(cache: Any) -> bool:
    """Only plain full-attention layers: sliding-window layers drop old keys themselves."""
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def seed_cache(cache: Any, reused: Sequence[Reused | None], width: int) -> None:
    """Fill an empty cache with each row's reused keys/values, right-aligned in `width` columns."""
    first = next(entry for entry in reused if entry is not None)
    for layer_index in range(len(first.keys)):
        heads, _, dim = first.keys[layer_index].shape
        like = first.keys[layer_index]
        keys = like.new_zeros((len(reused), heads, width, dim))
        values = like.new_zeros((len(reused), heads, width, dim))
        for row, entry in enumerate(reused):
            if entry is not None:
                keys[row, :, width - entry.length :] = entry.keys[layer_index]
                values[row, :, width - entry.length :] = entry.values[layer_index]
        cache.update(keys, values, layer_index)
