"""GEPA's reflection model, served by our reflector so its calls and tokens count like E-SPL's.

GEPA asks for a `str -> str` callable (a prompt in, the model's answer out); it may also use
`batch_complete(messages_list)` when it has several reflections at once. Both go through
`Reflector.ask_many`, one chat message per prompt, so the run's budget shows GEPA's
reflection in the same units (calls, prompt tokens, generated tokens) as E-SPL's mutation.

A failed call, or an answer without any instruction in it, raises `ReflectionFailed`: GEPA
then proposes nothing this iteration instead of trying an empty system prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gepa.strategies.instruction_proposal import InstructionProposalSignature

from agents.engine import Conversation
from espl.evolution.reflector import ReflectorLike, ReflectorUsage, ask_safely
from espl.evolution.operators.text import remove_unprintable, strip_chat_markers


class ReflectionFailed(RuntimeError):
    """The reflector gave no usable answer."""


class ReflectionLM:
    """A GEPA `LanguageModel` over a `ReflectorLike`."""

    def __init__(self, reflector: ReflectorLike, *, max_tokens: int | None = None) -> None:
        self.reflector = reflector
        self.max_tokens = max_tokens
        self.prompts: list[str] = []
        """Every prompt sent, in order (kept for inspection and tests)."""

    @property
    def usage(self) -> ReflectorUsage:
        return self.reflector.usage

    def __call__(self, prompt: str | list[dict[str, Any]]) -> str:
        return self._ask([_as_conversation(prompt)])[0]

    def batch_complete(self, messages_list: Sequence[list[dict[str, Any]]]) -> list[str]:
        return self._ask([_as_conversation(messages) for messages in messages_list])

    def _ask(self, conversations: list[Conversation]) -> list[str]:
        self.prompts += [str(c[-1].get("content", "")) for c in conversations]
        replies = ask_safely(self.reflector, conversations, max_tokens=self.max_tokens)
        texts: list[str] = []
        for reply in replies:
            if not reply.ok:
                raise ReflectionFailed(f"the reflector failed: {reply.error}")
            # A proposed prompt becomes a system prompt: no forged chat turns, no invisible characters.
            text = remove_unprintable(strip_chat_markers(reply.text))
            if not InstructionProposalSignature.output_extractor(text.strip())["new_instruction"].strip():
                raise ReflectionFailed("the reflector's answer holds no instruction")
            texts.append(text)
        return texts


def _as_conversation(prompt: str | list[dict[str, Any]]) -> Conversation:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]  # type: ignore[misc]
