"""The reflector stages' edit lists, decoded against their schema by a real engine, always parse.

The tiny random model never writes JSON on its own; under the constraint every sample must
be a list the stage's parser accepts in full (no error, no rejected edit), with principles
shaped as sentences, indexes within the current principles, and at least one edit where the
stage asks for one.
"""

from __future__ import annotations

import re

import pytest

from agents import models
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from espl.evolution.operators.edit_schema import edit_list_constraint, edit_list_schema, principle_pattern
from espl.evolution.operators.edits import ADD, MERGE, MODIFY, REMOVE, EditRules, parse_edits

CRITIQUE = EditRules(allowed_ops=frozenset({ADD, MODIFY}), n_principles=2, max_edits=2)
PLAN = EditRules(allowed_ops=frozenset({ADD, MODIFY, MERGE}), n_principles=3)
PROMPT = [{"role": "user", "content": "Propose edits to the principles as a JSON list."}]


@pytest.fixture(scope="module")
def engine() -> HFEngine:
    return HFEngine(models.load_model("tiny-random"), tokenizer=models.load_tokenizer("tiny-random"), max_batch_size=16)


def test_schema_follows_the_rules() -> None:
    schema = edit_list_schema(CRITIQUE)
    assert schema["maxItems"] == 2 and "minItems" not in schema
    ops = {item["properties"]["op"]["const"] for item in schema["items"]["anyOf"]}
    assert ops == {ADD, MODIFY}
    modify = next(i for i in schema["items"]["anyOf"] if i["properties"]["op"]["const"] == MODIFY)
    assert modify["properties"]["index"] == {"type": "integer", "minimum": 0, "maximum": 1}
    assert edit_list_schema(PLAN, min_edits=1)["minItems"] == 1
    empty = EditRules(allowed_ops=frozenset({ADD, MODIFY, REMOVE}), n_principles=0)
    assert [i["properties"]["op"]["const"] for i in edit_list_schema(empty)["items"]["anyOf"]] == [ADD]


def test_principle_pattern_is_a_sentence() -> None:
    pattern = re.compile(principle_pattern(32)[1:-1])
    for good in ("Search for the second entity before answering.",
                 "Don't guess: search (twice) for multi-hop questions, then answer in 3 words.",
                 "Compare both entities' birth dates; use HTML tags 42% of the time."):
        assert pattern.fullmatch(good), good
    # The junk a 135M reflector wrote under the looser shape: odd characters cost a token each.
    for bad in ("S", "1.2", "thnk", "search for it.", "No final period here", "Two words.",
                "TASK 1:G0:GJ:GJ:GJ is it.", "GQMGkCgJjwBgMGkCgJhjMgMg is a rule of 5."):
        assert not pattern.fullmatch(bad), bad


PRINCIPLE_CASES = (
    "Search for the second entity before answering.",
    "Don't guess: search (twice) for multi-hop questions, then answer in 3 words.",
    "Compare both entities' birth dates; use HTML tags 42% of the time.",
    "Ab cd tortureleavedevaluate ef.",  # a 21-letter word
    "Ab cd multi-hopxxxxxxxxxxxxxxxxx ef.",
    "TASK 1:G0:GJ:GJ:GJ is it.",
    "GQMGkCgJjwBgMGkCgJhjMgMg is a rule of 5.",
    "Ab (cd) ef; gh.",
)


def test_the_decoder_reads_the_principle_pattern_as_python_does() -> None:
    """xgrammar compiles a JSON schema's `pattern` with its own regex reader; what it accepts
    inside the JSON string must be what the parser's `re` accepts (an optional group after a
    bounded class once let 21-letter words through)."""
    import json

    import xgrammar
    from xgrammar.testing import _is_grammar_accept_string

    pattern = principle_pattern(32)
    grammar = xgrammar.Grammar.from_json_schema(json.dumps({"type": "string", "pattern": pattern}), any_whitespace=False)
    python = re.compile(pattern[1:-1])
    verdicts = {case: _is_grammar_accept_string(grammar, json.dumps(case)) for case in PRINCIPLE_CASES}
    assert verdicts == {case: bool(python.fullmatch(case)) for case in PRINCIPLE_CASES}
    assert sum(verdicts.values()) == 4  # the four sentences, none of the junk


@pytest.mark.parametrize(
    ("rules", "min_edits", "max_edits"),
    # CRITIQUE's list is decoded in `make test` by the reason-first test below.
    [pytest.param(CRITIQUE, 0, None, marks=pytest.mark.extended), pytest.param(PLAN, 1, 2, marks=pytest.mark.slow)],
)
def test_every_constrained_reply_parses_in_full(
    engine: HFEngine, rules: EditRules, min_edits: int, max_edits: int | None
) -> None:
    constraint = edit_list_constraint(rules, min_edits=min_edits, max_edits=max_edits)
    params = SamplingParams(temperature=1.0, max_tokens=400, n=3, seed=5, constraint=constraint)
    (completions,) = engine.generate([PROMPT], params)
    pattern = re.compile(principle_pattern(rules.max_words)[1:-1])
    for completion in completions:
        assert completion.ok and completion.finish_reason == "stop", completion.text
        parsed = parse_edits(completion.text, rules, stopped=True)
        assert parsed.error is None and not parsed.rejected, (completion.text, parsed)
        assert min_edits <= len(parsed.edits) <= (max_edits or rules.max_edits or 64)
        for edit in parsed.edits:
            assert edit.op in rules.allowed_ops and pattern.fullmatch(edit.principle or ""), edit


@pytest.mark.slow
def test_reason_first_reply_is_text_then_a_fenced_list(engine: HFEngine) -> None:
    constraint = edit_list_constraint(CRITIQUE, reason_first=True)
    params = SamplingParams(temperature=1.0, max_tokens=1200, n=2, seed=6, constraint=constraint)
    (completions,) = engine.generate([PROMPT], params)
    for completion in completions:
        assert completion.ok and completion.finish_reason == "stop", completion.text
        assert "```json\n" in completion.text and completion.text.endswith("\n```")
        parsed = parse_edits(completion.text, CRITIQUE, stopped=True)
        assert parsed.error is None and not parsed.rejected, (completion.text, parsed)
