"""Chat formatting: system prompt placement, and token-exact continuation across turns
(checked against rendering the whole conversation with SmolLM2's ChatML template)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from agents.chat import (
    TemplateNotPrefixStable,
    check_prefix_stable,
    continuation_ids,
    end_of_turn_ids,
    render_ids,
    render_prompt_ids,
    template_injects_system,
    with_system_prompt,
)
from agents.models import load_tokenizer

PRINCIPLES = "G0. Check the units.\nG1. Search before answering."
QUESTION = [{"role": "user", "content": "Who wrote Dune?"}]

# A template in the style of reasoning models: earlier assistant turns lose their <think> block.
DROPS_REASONING = (
    "{% for m in messages %}{% set c = m['content'] %}"
    "{% if m['role'] == 'assistant' and not loop.last %}{% set c = c.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + m['role'] + '\n' + c + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template that restates the system message after the last user turn.
MOVES_SYSTEM = (
    "{% for m in messages if m['role'] != 'system' %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if messages[0]['role'] == 'system' %}{{ '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
PLAIN_CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("smollm2-135m")


def with_template(tokenizer: Any, template: str) -> Any:
    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


def test_system_placement_replaces_the_default_system_message(tokenizer: Any) -> None:
    text = tokenizer.decode(render_prompt_ids(tokenizer, QUESTION, PRINCIPLES, "system"))
    assert text.startswith(f"<|im_start|>system\n{PRINCIPLES}<|im_end|>\n<|im_start|>user\nWho wrote Dune?<|im_end|>")
    assert "SmolLM" not in text
    assert text.endswith("<|im_start|>assistant\n")


def test_user_placement_appends_to_the_first_user_turn(tokenizer: Any) -> None:
    conversation = [*QUESTION, {"role": "assistant", "content": "Herbert."}, {"role": "user", "content": "Sure?"}]
    text = tokenizer.decode(render_prompt_ids(tokenizer, conversation, PRINCIPLES, "user"))
    assert f"<|im_start|>user\nWho wrote Dune?\n\n{PRINCIPLES}<|im_end|>" in text
    assert text.count(PRINCIPLES) == 1 and "<|im_start|>user\nSure?<|im_end|>" in text
    assert "named SmolLM" in text, "SmolLM2's template keeps its default system message here"


def test_placement_keeps_an_existing_system_message_and_copies() -> None:
    conversation = [{"role": "system", "content": "Env rules."}, *QUESTION]
    placed = with_system_prompt(conversation, PRINCIPLES, "system")
    assert placed[0] == {"role": "system", "content": f"{PRINCIPLES}\n\nEnv rules."}
    assert conversation[0]["content"] == "Env rules.", "the input must not be modified"
    assert with_system_prompt(conversation, None, "user") == conversation
    with pytest.raises(ValueError, match="placement"):
        with_system_prompt(conversation, PRINCIPLES, "assistant")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="user message"):
        with_system_prompt([{"role": "system", "content": "x"}], PRINCIPLES, "user")


def test_template_injects_system(tokenizer: Any) -> None:
    assert template_injects_system(tokenizer)
    assert not template_injects_system(with_template(tokenizer, PLAIN_CHATML))


def test_end_of_turn_ids_of_chatml(tokenizer: Any) -> None:
    assert tokenizer.decode(end_of_turn_ids(tokenizer)) == "<|im_end|>\n"


def sampled_turn(tokenizer: Any, text: str, ended_on_eos: bool) -> list[int]:
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")] if ended_on_eos else ids


@pytest.mark.parametrize(
    ("assistant_text", "ended_on_eos"),
    [
        ("The answer is 42.", True),  # stopped on EOS: <|im_end|> was sampled
        ("<think>look it up</think>\n<search>Dune author</search>", False),  # stopped on a stop string
        ("Let me think about this step by", False),  # hit max_tokens mid-sentence
    ],
)
def test_continuation_matches_rendering_the_whole_conversation(
    tokenizer: Any, assistant_text: str, ended_on_eos: bool
) -> None:
    prompt = render_prompt_ids(tokenizer, QUESTION, PRINCIPLES)
    sampled = sampled_turn(tokenizer, assistant_text, ended_on_eos)
    so_far = with_system_prompt(QUESTION, PRINCIPLES) + [{"role": "assistant", "content": assistant_text}]
    reply = [{"role": "user", "content": "<information>Doc 1(Title: Dune) Frank Herbert</information>"}]
    added = continuation_ids(tokenizer, so_far, reply, sampled_ids=sampled)
    assert prompt + sampled + added == render_ids(tokenizer, so_far + reply, add_generation_prompt=True)
    assert tokenizer.decode(added).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(added).startswith("\n" if ended_on_eos else "<|im_end|>\n")


def test_continuation_over_several_turns(tokenizer: Any) -> None:
    conversation = with_system_prompt(QUESTION, PRINCIPLES)
    ids = render_ids(tokenizer, conversation, add_generation_prompt=True)
    turns = [("<search>Dune</search>", False, "<information>Herbert</information>"), ("Frank Herbert", True, None)]
    for text, eos, reply in turns:
        ids += sampled_turn(tokenizer, text, eos)
        conversation.append({"role": "assistant", "content": text})
        if reply is not None:
            new = [{"role": "user", "content": reply}]
            ids += continuation_ids(tokenizer, conversation, new, sampled_ids=ids)
            conversation += new
    closing = continuation_ids(tokenizer, conversation, [], sampled_ids=ids, add_generation_prompt=False)
    assert ids + closing == render_ids(tokenizer, conversation, add_generation_prompt=False)


def test_continuation_needs_the_assistant_turn_last(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="end with the assistant"):
        continuation_ids(tokenizer, QUESTION, [{"role": "user", "content": "x"}])


def test_smollm2_template_is_prefix_stable(tokenizer: Any) -> None:
    check_prefix_stable(tokenizer)


def test_template_dropping_earlier_reasoning_is_detected(tokenizer: Any) -> None:
    unstable = with_template(tokenizer, DROPS_REASONING)
    with pytest.raises(TemplateNotPrefixStable, match="re-renders history"):
        check_prefix_stable(unstable)
    so_far = [*QUESTION, {"role": "assistant", "content": "<think>hmm</think>Herbert"}]
    with pytest.raises(TemplateNotPrefixStable, match="changed how earlier turns render"):
        continuation_ids(unstable, so_far, [{"role": "user", "content": "Sure?"}])


def test_template_moving_the_system_message_is_detected(tokenizer: Any) -> None:
    with pytest.raises(TemplateNotPrefixStable, match="first difference at token"):
        check_prefix_stable(with_template(tokenizer, MOVES_SYSTEM))
