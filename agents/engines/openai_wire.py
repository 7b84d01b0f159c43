"""The OpenAI wire format as the `openai` engine reads and writes it: prompt kinds, the reply's
choices, usage and logprobs (kept apart from the engine's transport and retries)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from agents.engine import Completion, Prompt

Mode = Literal["completions", "chat"]


def attach_usage(completions: list[Completion], usage: Any) -> None:
    """The server's token counts on a one-choice reply (what a server that returns no token
    ids says it generated; the reflector's budget counts it)."""
    if len(completions) != 1 or not isinstance(usage, Mapping):
        return
    for key in ("prompt_tokens", "completion_tokens"):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            completions[0].extra[key] = value


def is_conversation(prompt: Prompt) -> bool:
    if not isinstance(prompt, Sequence) or isinstance(prompt, (str, bytes)) or not prompt:
        raise ValueError("a prompt is a non-empty list of token ids or of chat messages")
    return all(isinstance(item, Mapping) for item in prompt)


def token_prompt_ids(prompt: Sequence[Any]) -> list[int]:
    if not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        raise ValueError("a prompt mixes token ids and messages, or holds other items")
    return [int(t) for t in prompt]


def by_index(choices: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted(choices, key=lambda choice: choice.get("index", 0))


def sampled_logprobs(logprobs: Mapping[str, Any] | None, mode: Mode) -> list[float]:
    """Each sampled token's logprob from a completions or chat `logprobs` object."""
    if not logprobs:
        return []
    if mode == "chat":
        return [float(entry["logprob"]) for entry in logprobs.get("content") or []]
    return [float(value) for value in logprobs.get("token_logprobs") or [] if value is not None]
