"""Prompt validation shared by the in-process engines: token ids or a chat, checked once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agents.chat import render_prompt_ids
from agents.engine import Prompt


def prompt_token_ids(prompt: Prompt, tokenizer: Any, *, vocab_size: int, max_length: int | None, limit: str) -> list[int]:
    """Token ids for a token prompt (validated) or a conversation (chat template applied).

    Raises ValueError for an empty or mixed prompt, an id outside [0, vocab_size), or a prompt
    that leaves no room to generate under `max_length` (named `limit` in the message).
    """
    if not isinstance(prompt, Sequence) or isinstance(prompt, (str, bytes)) or not prompt:
        raise ValueError("a prompt is a non-empty list of token ids or of chat messages")
    if all(isinstance(item, Mapping) for item in prompt):
        ids = render_prompt_ids(tokenizer, prompt)  # type: ignore[arg-type]
    elif all(isinstance(item, (int, np.integer)) and not isinstance(item, bool) for item in prompt):
        ids = [int(item) for item in prompt]  # type: ignore[arg-type]
    else:
        raise ValueError("a prompt mixes token ids and messages, or holds other items")
    if any(not 0 <= token < vocab_size for token in ids):
        raise ValueError(f"token id outside the vocabulary [0, {vocab_size})")
    if max_length is not None and len(ids) >= max_length:
        raise ValueError(f"prompt of {len(ids)} tokens leaves no room under {limit}")
    return ids
