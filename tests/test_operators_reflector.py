"""The reflector wrapper: one batched call per `ask_many`, budget counting, errors as replies."""

from __future__ import annotations

from typing import Any

from test_operators_support import ScriptedEngine, constant, per_item

from agents.engine import Adapter, Completion, Engine, SamplingParams
from espl.evolution.reflector import Reflector, ReflectorReply, ReflectorUsage, ask_safely


def conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class CountingTokenizer:
    """A chat template that emits one token per character plus two per message."""

    def apply_chat_template(self, messages, tokenize, add_generation_prompt, return_dict=False):
        assert tokenize and add_generation_prompt
        return list(range(sum(len(m["content"]) + 2 for m in messages)))


class TokenizedEngine(ScriptedEngine):
    @property
    def tokenizer(self) -> Any:
        return CountingTokenizer()


def test_scripted_engine_satisfies_the_engine_protocol():
    assert isinstance(ScriptedEngine([]), Engine)


def test_one_generate_call_per_batch_with_usage_counted():
    engine = TokenizedEngine([per_item(["one two", "three"])])
    sampling = SamplingParams(temperature=0.3, max_tokens=100, n=4)
    reflector = Reflector(engine, sampling)
    replies = reflector.ask_many([conv("abcd"), conv("xy")], max_tokens=17)
    assert [r.text for r in replies] == ["one two", "three"]
    assert all(r.ok for r in replies)
    assert len(engine.calls) == 1
    prompts, params, adapter = engine.calls[0]
    assert prompts == [conv("abcd"), conv("xy")]
    assert params.max_tokens == 17 and params.n == 1 and params.temperature == 0.3
    assert adapter is None
    assert reflector.usage == ReflectorUsage(calls=2, prompt_tokens=6 + 4, completion_tokens=3, batches=1)


def test_adapter_is_passed_and_seed_differs_per_batch():
    engine = ScriptedEngine([constant("a"), constant("b")])
    adapter = Adapter(name="reflect")
    reflector = Reflector(engine, SamplingParams(seed=100), adapter=adapter)
    reflector.ask_many([conv("q")])
    reflector.ask_many([conv("q")])
    assert [call[1].seed for call in engine.calls] == [100, 101]
    assert all(call[2] is adapter for call in engine.calls)


def test_engine_reported_prompt_tokens_win_and_estimates_are_flagged():
    reported = Completion([1, 2], [0.0, 0.0], "ok", "stop", extra={"prompt_tokens": 55})
    engine = ScriptedEngine([per_item([reported, "plain"])])
    reflector = Reflector(engine)
    replies = reflector.ask_many([conv("x" * 40), conv("y" * 40)])
    assert replies[0].prompt_tokens == 55
    assert replies[1].prompt_tokens == 10  # 40 characters at 4 per token
    assert reflector.usage.estimated_prompt_tokens
    assert reflector.usage.prompt_tokens == 65


def test_failed_completions_and_engine_exceptions_become_failed_replies():
    def explode(conversations):
        raise RuntimeError("server down")

    engine = ScriptedEngine([per_item([Completion.failed("too long"), "fine"]), explode])
    reflector = Reflector(engine)
    first = reflector.ask_many([conv("a"), conv("b")])
    assert [r.ok for r in first] == [False, True]
    assert first[0].error == "too long"
    second = reflector.ask_many([conv("a"), conv("b"), conv("c")])
    assert all(not r.ok and "server down" in r.error for r in second)
    assert reflector.usage.calls == 5 and reflector.usage.failed_calls == 4 and reflector.usage.batches == 2


def test_short_engine_answers_are_padded_with_failures():
    class ShortEngine(ScriptedEngine):
        def generate(self, prompts, params, adapter=None):
            self.calls.append((list(prompts), params, adapter))
            return [[Completion([7], [0.0], "only one", "stop")]]

    reflector = Reflector(ShortEngine([]))
    replies = reflector.ask_many([conv("a"), conv("b")])
    assert [r.text for r in replies] == ["only one", ""]
    assert not replies[1].ok


def test_empty_batch_makes_no_call():
    engine = ScriptedEngine([])
    reflector = Reflector(engine)
    assert reflector.ask_many([]) == []
    assert engine.calls == [] and reflector.usage.batches == 0


def test_ask_safely_guards_other_reflector_implementations():
    class Raising:
        usage = ReflectorUsage()

        def ask_many(self, conversations, *, max_tokens=None):
            raise ValueError("broken")

    class Short:
        usage = ReflectorUsage()

        def ask_many(self, conversations, *, max_tokens=None):
            return [ReflectorReply(text="x", ok=True), "not a reply"]

    assert [r.ok for r in ask_safely(Raising(), [conv("a"), conv("b")])] == [False, False]
    assert [r.ok for r in ask_safely(Short(), [conv("a"), conv("b"), conv("c")])] == [True, False, False]


def test_stage_stop_strings_join_the_sampling_stops_for_one_call_only():
    engine = ScriptedEngine([constant("a"), constant("b")])
    reflector = Reflector(engine, SamplingParams(max_tokens=9, stop=("END",)))
    reflector.ask_many([conv("a")], stop=("]\n```", "END"))
    reflector.ask_many([conv("b")])
    assert engine.calls[0][1].stop == ("END", "]\n```") and engine.calls[1][1].stop == ("END",)


def test_a_structured_reflector_passes_the_stage_constraint_and_an_unstructured_one_does_not():
    from agents.engine import Constraint

    shape = Constraint(regex="[a-z]+")
    engine = ScriptedEngine([constant("a"), constant("b"), constant("c")])
    reflector = Reflector(engine, SamplingParams(max_tokens=300))
    reflector.ask_many([conv("a")], max_tokens=40, constraint=shape)
    reflector.ask_many([conv("b")], max_tokens=40)
    unstructured = Reflector(engine, SamplingParams(max_tokens=300), structured=False)
    unstructured.ask_many([conv("c")], max_tokens=40, constraint=shape)
    assert [(params.max_tokens, params.constraint) for _, params, _ in engine.calls] == [
        (40, shape), (40, None), (40, None)
    ]


def test_ask_safely_passes_stop_strings_only_to_implementations_that_get_some():
    class NoStop:  # written before `stop` existed
        usage = ReflectorUsage()

        def ask_many(self, conversations, *, max_tokens=None):
            return [ReflectorReply(text="x", ok=True) for _ in conversations]

    assert [r.ok for r in ask_safely(NoStop(), [conv("a")])] == [True]
    assert [r.ok for r in ask_safely(NoStop(), [conv("a")], stop=("]",))] == [False]  # it cannot honour them
    assert [r.ok for r in ask_safely(Reflector(ScriptedEngine([constant("y")])), [conv("a")], stop=("]",))] == [True]


def test_usage_arithmetic():
    total = ReflectorUsage(calls=5, prompt_tokens=100, completion_tokens=40, failed_calls=1, batches=2)
    before = total.copy()
    total.add(ReflectorUsage(calls=1, prompt_tokens=10, completion_tokens=4, batches=1))
    assert total - before == ReflectorUsage(calls=1, prompt_tokens=10, completion_tokens=4, batches=1)
    assert total.to_record()["calls"] == 6
