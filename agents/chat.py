"""Chat formatting with the model's own template, and token-exact multi-turn continuation.

Two concerns live here:

1. **Where the system prompt goes.** E-SPL's evolving principles are a string placed either
   in the system role (`placement="system"`) or appended to the first user turn
   (`placement="user"`, what the E-SPL paper did because its model's template has no system
   role). Templates differ in what they do without a system message: SmolLM2's ChatML
   template, for one, injects its own default system message ("You are a helpful AI assistant
   named SmolLM...") whenever the conversation does not start with one. So with
   `placement="user"` (or no system prompt at all) that default text is still in the prompt;
   pass `placement="system"` to replace it. `template_injects_system(tokenizer)` tells which
   kind of template a tokenizer has.

2. **Token-in/token-out multi-turn rollouts.** After the engine samples an assistant turn,
   the rollout appends the environment's reply and the next generation prompt as token ids,
   never re-tokenizing what was sampled. `continuation_ids` computes those ids as the
   difference between rendering the longer and the shorter conversation, which is only
   valid when the template is *prefix-stable*: rendering a conversation and then rendering it
   with more turns must leave the earlier tokens unchanged. Templates that drop earlier
   reasoning (`<think>` blocks) or otherwise re-render history are not; `check_prefix_stable`
   detects them.

The seam rule. The template closes every assistant turn with an end-of-turn suffix (ChatML:
``<|im_end|>\\n``). The engine's sampled tokens contain a prefix of that suffix only when
generation stopped on the end-of-turn token (EOS): then they end with ``<|im_end|>`` and the
continuation starts with the rest (``\\n``). When generation stopped on a stop string
(``</search>``) or hit `max_tokens`, none of the suffix was sampled and the continuation
starts with the whole suffix. `continuation_ids(..., sampled_ids=...)` applies this rule by
matching the longest prefix of the suffix that the sampled ids already end with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

Message = Mapping[str, str]
Placement = Literal["system", "user"]
PLACEMENTS: tuple[str, ...] = ("system", "user")

_PROBE_CONTENT = "PROBE-7f3a9c"
"""An assistant message body that no template alters, used to find the end-of-turn suffix."""


class TemplateNotPrefixStable(ValueError):
    """The chat template re-renders earlier turns, so ids cannot be extended turn by turn."""


def with_system_prompt(
    messages: Sequence[Message], system_prompt: str | None, placement: Placement = "system"
) -> list[dict[str, str]]:
    """A copy of `messages` with `system_prompt` placed in the system role or the first user turn.

    `placement="system"`: a leading system message is added; if the conversation already has
    one, the system prompt goes first and the existing text follows after a blank line.
    `placement="user"`: the system prompt is appended to the first user message after a blank
    line (the template's default system message, if any, stays).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    out = [dict(message) for message in messages]
    if not system_prompt:
        return out
    if placement == "system":
        if out and out[0].get("role") == "system":
            out[0]["content"] = f"{system_prompt}\n\n{out[0]['content']}"
        else:
            out.insert(0, {"role": "system", "content": system_prompt})
        return out
    for message in out:
        if message.get("role") == "user":
            message["content"] = f"{message['content']}\n\n{system_prompt}"
            return out
    raise ValueError("placement='user' needs a user message to append the system prompt to")


def render_ids(tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool) -> list[int]:
    """The template's token ids for `messages` (a plain list, whatever the transformers version)."""
    ids = tokenizer.apply_chat_template(
        [dict(m) for m in messages],
        tokenize=True,
        add_generation_prompt=add_generation_prompt,
        return_dict=False,
    )
    if isinstance(ids, Mapping):  # some versions return a BatchEncoding regardless
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def render_prompt_ids(
    tokenizer: Any,
    messages: Sequence[Message],
    system_prompt: str | None = None,
    placement: Placement = "system",
) -> list[int]:
    """Prompt ids for generating the next assistant turn, with the system prompt placed."""
    placed = with_system_prompt(messages, system_prompt, placement)
    return render_ids(tokenizer, placed, add_generation_prompt=True)


def template_injects_system(tokenizer: Any) -> bool:
    """Whether the template adds a system block of its own when the conversation has none
    (SmolLM2, Qwen2.5 and Llama 3.1 do; the rendered text before the user turn names the
    system role)."""
    bare = tokenizer.apply_chat_template(
        [{"role": "user", "content": _PROBE_CONTENT}], tokenize=False, add_generation_prompt=False
    )
    return "system" in bare[: bare.index(_PROBE_CONTENT)]


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The ids the template puts right after an assistant message's content (ChatML: `<|im_end|>\\n`)."""
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE_CONTENT}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    at = text.rfind(_PROBE_CONTENT)
    if at < 0:
        raise TemplateNotPrefixStable("the chat template does not render the assistant's content verbatim")
    suffix = text[at + len(_PROBE_CONTENT) :]
    return [int(i) for i in tokenizer.encode(suffix, add_special_tokens=False)]


def _overlap(sampled: Sequence[int], suffix: Sequence[int]) -> int:
    """The length of the longest prefix of `suffix` that `sampled` ends with."""
    for k in range(min(len(sampled), len(suffix)), 0, -1):
        if list(sampled[-k:]) == list(suffix[:k]):
            return k
    return 0


def continuation_ids(
    tokenizer: Any,
    messages_so_far: Sequence[Message],
    new_messages: Sequence[Message],
    *,
    sampled_ids: Sequence[int] = (),
    add_generation_prompt: bool = True,
) -> list[int]:
    """Ids to append after the assistant's sampled ids: the end of its turn, `new_messages`
    (the environment's reply), and the next generation prompt.

    `messages_so_far` ends with the assistant message whose content is the decoded sample.
    `sampled_ids` are that message's sampled ids (only their tail matters: see the seam rule in
    the module docstring); leave it empty when none of the end-of-turn suffix was sampled.
    Raises `TemplateNotPrefixStable` if the longer rendering does not extend the shorter one.
    """
    if not messages_so_far or messages_so_far[-1].get("role") != "assistant":
        raise ValueError("messages_so_far must end with the assistant message that was sampled")
    shorter = render_ids(tokenizer, messages_so_far, add_generation_prompt=False)
    longer = render_ids(
        tokenizer, [*messages_so_far, *new_messages], add_generation_prompt=add_generation_prompt
    )
    if longer[: len(shorter)] != shorter:
        raise TemplateNotPrefixStable(
            "adding turns changed how earlier turns render "
            f"(first difference at token {_first_difference(shorter, longer)}); "
            "token-level continuation is impossible with this template"
        )
    suffix = end_of_turn_ids(tokenizer)
    if shorter[len(shorter) - len(suffix) :] != suffix:
        raise TemplateNotPrefixStable("the rendered conversation does not end with the template's end-of-turn ids")
    return suffix[_overlap(sampled_ids, suffix) :] + longer[len(shorter) :]


def _first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _probe_conversation() -> list[dict[str, str]]:
    """A multi-turn conversation that exercises what non-stable templates rewrite."""
    return [
        {"role": "system", "content": "Follow the principles."},
        {"role": "user", "content": "First question?"},
        {"role": "assistant", "content": "<think>\nfirst reasoning\n</think>\n\nfirst <search>q</search>"},
        {"role": "user", "content": "<information>Doc 1(Title: t) text</information>"},
        {"role": "assistant", "content": "<think>\nsecond reasoning\n</think>\n\nsecond answer"},
        {"role": "user", "content": "Next?"},
    ]


def check_prefix_stable(tokenizer: Any) -> None:
    """Raise `TemplateNotPrefixStable`, naming the problem, if the template is not prefix-stable.

    Checks on a probe conversation (with `<think>` blocks in assistant turns) that (a) each
    generation prompt followed by the assistant's content is how that turn renders, and (b)
    rendering more turns never changes the ids of the turns already rendered.
    """
    conversation = _probe_conversation()
    for end in range(1, len(conversation) + 1):
        message = conversation[end - 1]
        if message["role"] == "assistant":
            prompt = tokenizer.apply_chat_template(
                conversation[: end - 1], tokenize=False, add_generation_prompt=True
            )
            turn = tokenizer.apply_chat_template(conversation[:end], tokenize=False)
            if not turn.startswith(prompt + message["content"]):
                raise TemplateNotPrefixStable(
                    f"the assistant turn {end - 1} does not render as generation prompt + content "
                    "(the template alters or drops the sampled text, e.g. strips reasoning)"
                )
        shorter = render_ids(tokenizer, conversation[:end], add_generation_prompt=False)
        for later in range(end + 1, len(conversation) + 1):
            longer = render_ids(tokenizer, conversation[:later], add_generation_prompt=False)
            if longer[: len(shorter)] != shorter:
                raise TemplateNotPrefixStable(
                    f"rendering {later} messages changes the tokens of the first {end} "
                    f"(first difference at token {_first_difference(shorter, longer)}): the template "
                    "re-renders history, e.g. drops earlier reasoning or moves the system prompt"
                )
