"""The behaviour every engine owes the rollout driver, as a reusable pytest base class.

How to use it for an engine::

    from engine_contract import EngineContract   # tests/ is on sys.path under pytest

    class TestMyEngine(EngineContract):
        @pytest.fixture(scope="class")
        @classmethod
        def engine(cls):
            engine = MyEngine(...)
            yield engine
            engine.close()

        @pytest.fixture(scope="class")
        @classmethod
        def adapter(cls, engine):
            return Adapter(name=..., path=...)   # output must differ from adapter=None

        @pytest.fixture(scope="class")
        @classmethod
        def reference(cls, engine):
            return scorer(hf_model_with_the_same_weights)  # float32, adapter off

The engine's model should not be degenerate under greedy decoding (a freshly initialised
tiny model with small weights emits one token forever, which would make the batch and
stop-string checks vacuous). Class attributes tune the suite: `max_tokens`, and
`supports_adapters = False` to skip the adapter check for engines that cannot load one.
All prompts are built from `engine.tokenizer`, so the suite needs nothing else from the
engine than the `Engine` protocol.

Structured generation (`SamplingParams.constraint`) is part of the contract: every sample of a
JSON-schema or regex constraint matches it, the reported logprobs are the unmasked model's (the
`reference`'s), and calls without a constraint are untouched by calls with one.

Greedy outputs of two numerically different paths (a batch and a prompt alone, a fresh and
a cached prefill, this CPU's kernels and another's) are never required to be equal: where
they differ, the `reference` (a teacher-forced float32 forward of the same weights) must
show a near tie at the first differing token, and every greedy token must be an argmax of
the reference up to such a tie (`assert_greedy`, `assert_same_greedy`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch

from agents.chat import render_prompt_ids
from agents.engine import Adapter, Completion, Constraint, Engine, SamplingParams

CONVERSATIONS: list[list[dict[str, str]]] = [
    [{"role": "user", "content": "Name a prime number."}],
    [
        {"role": "system", "content": "Answer briefly and show your reasoning in numbered steps."},
        {"role": "user", "content": "A train leaves at 3pm and travels for two and a half hours. When does it arrive?"},
    ],
    [{"role": "user", "content": "Hi"}],
]


def greedy(max_tokens: int, **kwargs: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kwargs)


# -- structured generation ---------------------------------------------------------------------

EDITS_SCHEMA: dict[str, Any] = {
    "type": "array",
    "maxItems": 2,
    "items": {
        "type": "object",
        "properties": {"op": {"enum": ["add", "modify"]}, "principle": {"type": "string", "maxLength": 40}},
        "required": ["op", "principle"],
        "additionalProperties": False,
    },
}
"""A reflector's edit list: at most two edits, each an operation and a short principle."""
ANSWER_REGEX = r"<answer>[a-z ]{1,20}</answer>"


def valid_edits(text: str) -> bool:
    """Whether `text` is JSON matching `EDITS_SCHEMA` (checked by hand: no schema library needed).

    Parsed with ``strict=False``: xgrammar 0.2.8 lets a string with ``maxLength`` hold raw control
    characters (mlc-ai/xgrammar#800), which strict JSON forbids; callers parse the same way."""
    try:
        edits = json.loads(text, strict=False)
    except ValueError:
        return False
    return isinstance(edits, list) and len(edits) <= 2 and all(
        isinstance(edit, dict) and set(edit) == {"op", "principle"} and edit["op"] in ("add", "modify")
        and isinstance(edit["principle"], str) and len(edit["principle"]) <= 40
        for edit in edits
    )


CONSTRAINTS: dict[str, tuple[Constraint, Callable[[str], bool]]] = {
    "json_schema": (Constraint.schema(EDITS_SCHEMA), valid_edits),
    "regex": (Constraint(regex=ANSWER_REGEX), lambda text: re.fullmatch(ANSWER_REGEX, text) is not None),
}


# -- greedy checks that hold on every CPU ------------------------------------------------------

Scorer = Callable[[list[int]], torch.Tensor]
"""Token ids -> log-softmax of the next token at every position ([len(ids), vocab], float32)."""

NEAR_TIE_NATS = 0.05
"""Two candidates closer than this under the reference may come out in either order from
another numeric path; float32 paths differ by about 1e-5 nats, so a wider gap never flips."""


def scorer(model: Any, *, base: bool = True) -> Scorer:
    """A teacher-forced float32 forward of `model` (a peft model's adapter off when `base`)."""

    def score(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            if base and hasattr(model, "disable_adapter"):
                with model.disable_adapter():
                    logits = model(input_ids=torch.tensor([ids])).logits[0]
            else:
                logits = model(input_ids=torch.tensor([ids])).logits[0]
        return torch.log_softmax(logits.float(), dim=-1)

    return score


def step_logprobs(score: Scorer, prompt: list[int], ids: list[int]) -> torch.Tensor:
    """The reference's next-token log-softmax at each of `ids`' positions after `prompt`."""
    return score(list(prompt) + list(ids))[len(prompt) - 1 : len(prompt) - 1 + len(ids)]


def assert_greedy(score: Scorer, prompt: list[int], completion: Completion, *, logprob_tolerance: float | None = None) -> None:
    """Every token is an argmax of the reference up to a near tie; with a tolerance, the
    reported logprobs are the reference's (raw log-softmax, what greedy decoding reports)."""
    ids = completion.token_ids
    if not ids:
        return
    rows = step_logprobs(score, prompt, ids)
    chosen = rows.gather(-1, torch.tensor(ids)[:, None]).squeeze(-1)
    gaps = rows.max(dim=-1).values - chosen
    worst = int(gaps.argmax())
    assert float(gaps[worst]) < NEAR_TIE_NATS, (
        f"token {worst} ({ids[worst]}) is {float(gaps[worst]):.3f} nats below the reference's best"
    )
    if logprob_tolerance is not None:
        errors = [abs(a - float(b)) for a, b in zip(completion.logprobs, chosen)]
        assert max(errors) < logprob_tolerance, f"logprobs off the reference by up to {max(errors):.2e}"


def assert_same_greedy(score: Scorer, prompt: list[int], a: list[int], b: list[int], *, prefix_ok: bool = False) -> int | None:
    """Two greedy runs of one prompt agree token for token up to the first near tie.

    Returns the index of the first differing token (a near tie) or None when they agree. One
    run may be a prefix of the other only with `prefix_ok` (e.g. one had a stop string)."""
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if k is None:
        assert prefix_ok or len(a) == len(b), f"one run stopped early: {a} vs {b}"
        return None
    row = step_logprobs(score, prompt, a[: k + 1])[k]
    gap = abs(float(row[a[k]] - row[b[k]]))
    assert gap < NEAR_TIE_NATS, f"the runs part at token {k} where the reference prefers one by {gap:.3f} nats"
    return k


class EngineContract:
    """Engine-agnostic checks; subclasses provide the `engine` (and `adapter`) fixtures."""

    max_tokens: int = 12
    supports_adapters: bool = True
    constrained_max_tokens: int = 160
    """Room for the longest match of `CONSTRAINTS` (two 40-character principles) and its EOS."""

    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls) -> Engine:
        raise NotImplementedError("subclasses provide a class-scoped `engine` fixture")

    @pytest.fixture(scope="class")
    @classmethod
    def adapter(cls, engine: Engine) -> Adapter:
        pytest.skip("this engine's test class provides no adapter")

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, engine: Engine) -> Scorer:
        raise NotImplementedError("subclasses provide a class-scoped `reference` scorer (see `scorer`)")

    @pytest.fixture(scope="class")
    @classmethod
    def token_prompts(cls, engine: Engine) -> list[list[int]]:
        return [render_prompt_ids(engine.tokenizer, conversation) for conversation in CONVERSATIONS]

    @pytest.fixture(scope="class")
    @classmethod
    def greedy_batch(cls, engine: Engine, token_prompts: list[list[int]]) -> list[list[Completion]]:
        return engine.generate(token_prompts, greedy(cls.max_tokens))

    def test_is_an_engine(self, engine: Engine) -> None:
        assert isinstance(engine, Engine)
        assert isinstance(engine.name, str) and engine.name

    def test_one_list_of_n_per_prompt(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        params = SamplingParams(temperature=1.0, max_tokens=4, n=3, seed=11)
        results = engine.generate(token_prompts, params)
        assert len(results) == len(token_prompts)
        for completions in results:
            assert len(completions) == 3
            assert all(completion.ok for completion in completions), [c.error for c in completions]
        texts = {tuple(c.token_ids) for completions in results for c in completions}
        assert len(texts) > len(token_prompts), "n samples per prompt were all identical"

    def test_greedy_picks_the_references_argmax(
        self, reference: Scorer, token_prompts: list[list[int]], greedy_batch: list[list[Completion]]
    ) -> None:
        for prompt, (completion,) in zip(token_prompts, greedy_batch):
            assert_greedy(reference, prompt, completion, logprob_tolerance=2e-3)

    def test_greedy_repeats(
        self, engine: Engine, reference: Scorer, token_prompts: list[list[int]], greedy_batch: list[list[Completion]]
    ) -> None:
        again = engine.generate(token_prompts, greedy(self.max_tokens))
        for prompt, (a,), (b,) in zip(token_prompts, greedy_batch, again):
            assert_same_greedy(reference, prompt, a.token_ids, b.token_ids)

    def test_greedy_output_is_not_degenerate(self, greedy_batch: list[list[Completion]]) -> None:
        firsts = {tuple(c[0].token_ids[:4]) for c in greedy_batch}
        assert len(firsts) > 1, "every prompt gave the same greedy start: the test model is degenerate"

    def test_token_ids_decode_to_text(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        params = SamplingParams(temperature=1.0, max_tokens=self.max_tokens, seed=3)
        for completions in engine.generate(token_prompts, params):
            completion = completions[0]
            assert completion.text == engine.tokenizer.decode(completion.token_ids, skip_special_tokens=True)

    def test_logprobs_one_per_token_finite_nonpositive(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=self.max_tokens, seed=5, n=2)
        for completions in engine.generate(token_prompts, params):
            for completion in completions:
                assert len(completion.logprobs) == len(completion.token_ids) > 0
                assert all(math.isfinite(lp) and lp <= 1e-6 for lp in completion.logprobs)

    def test_max_tokens_gives_length(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        results = engine.generate(token_prompts, greedy(5))
        assert all(len(c[0].token_ids) <= 5 for c in results)
        lengths = [c[0] for c in results if c[0].finish_reason == "length"]
        assert lengths, "no prompt ran to max_tokens"
        assert all(len(c.token_ids) == 5 for c in lengths)

    def test_stop_string_ends_generation(
        self, engine: Engine, reference: Scorer, token_prompts: list[list[int]], greedy_batch: list[list[Completion]]
    ) -> None:
        """A stop string taken from the middle of a greedy completion ends a rerun there."""
        full = max((c[0] for c in greedy_batch), key=lambda c: len(c.text.strip()))
        prompt = token_prompts[[c[0] for c in greedy_batch].index(full)]
        middle = len(full.text) // 2
        stop = full.text[middle : middle + 3]
        assert stop.strip(), f"cannot pick a stop string from {full.text!r}"
        cut = full.text.find(stop) + len(stop)
        (stopped,) = engine.generate([prompt], greedy(self.max_tokens, stop=(stop,)))[0]
        parted = assert_same_greedy(reference, prompt, full.token_ids, stopped.token_ids, prefix_ok=True)
        if parted is None or parted >= len(stopped.token_ids):  # the rerun followed the first run
            assert stopped.finish_reason == "stop" and stopped.stop_string == stop
            assert stopped.text.find(stop) + len(stop) == cut
            assert full.text.startswith(stopped.text)
        if stopped.finish_reason == "stop" and stopped.stop_string is not None:
            assert stopped.stop_string == stop and stop in stopped.text
            before_last = engine.tokenizer.decode(stopped.token_ids[:-1], skip_special_tokens=True)
            assert stop not in before_last, "generation went on past the token that completed the stop string"

    def test_batch_matches_each_prompt_alone(
        self, engine: Engine, reference: Scorer, token_prompts: list[list[int]], greedy_batch: list[list[Completion]]
    ) -> None:
        assert len({len(p) for p in token_prompts}) > 1, "the prompts should have mixed lengths"
        for prompt, batched in zip(token_prompts, greedy_batch):
            (alone,) = engine.generate([prompt], greedy(self.max_tokens))[0]
            assert_same_greedy(reference, prompt, batched[0].token_ids, alone.token_ids)

    def test_conversation_and_token_prompt_agree(
        self, engine: Engine, reference: Scorer, token_prompts: list[list[int]], greedy_batch: list[list[Completion]]
    ) -> None:
        from_chat = engine.generate(CONVERSATIONS, greedy(self.max_tokens))
        for prompt, (a,), (b,) in zip(token_prompts, greedy_batch, from_chat):
            assert_same_greedy(reference, prompt, a.token_ids, b.token_ids)

    def test_bad_prompt_fails_alone(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        out_of_vocab = [len(engine.tokenizer) + 10**6]
        results = engine.generate([token_prompts[0], out_of_vocab], greedy(4, n=2))
        assert all(c.ok and c.token_ids for c in results[0])
        assert len(results[1]) == 2
        assert all(c.finish_reason == "error" and c.error for c in results[1])

    def test_adapter_changes_output(
        self, engine: Engine, reference: Scorer, adapter: Adapter, token_prompts: list[list[int]],
        greedy_batch: list[list[Completion]],
    ) -> None:
        if not self.supports_adapters:
            pytest.skip("this engine cannot sample with an adapter")
        adapted = engine.generate(token_prompts, greedy(self.max_tokens), adapter=adapter)
        assert [c[0].token_ids for c in adapted] != [c[0].token_ids for c in greedy_batch]
        base_again = engine.generate(token_prompts, greedy(self.max_tokens))
        for prompt, (a,), (b,) in zip(token_prompts, greedy_batch, base_again):
            assert_same_greedy(reference, prompt, a.token_ids, b.token_ids)

    # -- structured generation -----------------------------------------------------------------

    @pytest.mark.parametrize("kind", sorted(CONSTRAINTS))
    def test_every_constrained_sample_matches(self, engine: Engine, token_prompts: list[list[int]], kind: str) -> None:
        """n samples at temperature 1 of several prompts, and greedy: all match, all end at EOS."""
        constraint, matches = CONSTRAINTS[kind]
        sampled = SamplingParams(temperature=1.0, max_tokens=self.constrained_max_tokens, n=3, seed=17, constraint=constraint)
        for params in (sampled, greedy(self.constrained_max_tokens, constraint=constraint)):
            for completions in engine.generate(token_prompts, params):
                for completion in completions:
                    assert completion.ok, completion.error
                    assert completion.extra.get("constrained") is True
                    assert completion.finish_reason == "stop", f"ran out of tokens: {completion.text!r}"
                    assert matches(completion.text), f"{kind} not matched: {completion.text!r}"

    @pytest.mark.parametrize("temperature", [0.0, 1.0])
    def test_constrained_logprobs_are_the_unmasked_models(
        self, engine: Engine, reference: Scorer, token_prompts: list[list[int]], temperature: float
    ) -> None:
        """The reported logprobs are the reference's log-softmax (temperature 1, no mask), also
        where the constraint forced a token the model gives little mass (a masked report would
        be near 0 there)."""
        constraint = CONSTRAINTS["regex"][0]
        params = SamplingParams(temperature=temperature, max_tokens=40, n=2, seed=23, constraint=constraint)
        lowest = 0.0
        for prompt, completions in zip(token_prompts, engine.generate(token_prompts, params)):
            for completion in completions:
                assert completion.ok and not completion.extra.get("logprobs_masked")
                expected = step_logprobs(reference, prompt, completion.token_ids)
                expected = expected.gather(-1, torch.tensor(completion.token_ids)[:, None]).squeeze(-1)
                errors = (torch.tensor(completion.logprobs) - expected).abs()
                assert float(errors.max()) < 2e-3, f"logprobs off the unmasked reference by {float(errors.max()):.2e}"
                lowest = min(lowest, float(expected.min()))
        assert lowest < -1.0, "the constraint never steered against the model: the check would be vacuous"

    def test_calls_without_a_constraint_are_untouched(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        """A seeded free call gives the same ids before and after constrained calls, unflagged."""
        free = SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=29)
        ids = lambda results: [[c.token_ids for c in completions] for completions in results]  # noqa: E731
        before = engine.generate(token_prompts, free)
        engine.generate(token_prompts, replace(free, constraint=CONSTRAINTS["json_schema"][0]))
        after = engine.generate(token_prompts, free)
        assert ids(after) == ids(before)
        assert all("constrained" not in c.extra for completions in after for c in completions)

    def test_bad_constraint_fails_every_completion(self, engine: Engine, token_prompts: list[list[int]]) -> None:
        results = engine.generate(token_prompts[:2], greedy(4, n=2, constraint=Constraint(regex="(unclosed")))
        assert [len(completions) for completions in results] == [2, 2]
        assert all(c.finish_reason == "error" and c.error for completions in results for c in completions)
