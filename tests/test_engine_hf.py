"""The `hf` engine: the shared engine contract on a tiny model, plus what only an in-process
engine can promise (exact logprobs, seeded noise per sequence, training between calls)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_contract import ANSWER_REGEX, CONSTRAINTS, CONVERSATIONS, EngineContract, greedy, scorer

from agents.chat import render_prompt_ids
from agents.engine import Adapter, Constraint, SamplingParams
from agents.engines import engine_class, list_engines, make_engine
from agents.engines import hf as hf_engine
from agents.engines.hf import HFEngine
from agents.models import load_model, load_tokenizer

WEIGHT_SCALE = 0.3
"""tiny-random's weights are redrawn at this scale: at its initial scale (0.02) greedy
decoding emits the same token forever, which would make batch and stop checks vacuous."""


def sharpened_tiny_model() -> Any:
    model = load_model("tiny-random")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * WEIGHT_SCALE)
    return model


def lora_config() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)


def with_lora(model: Any, seed: int = 1) -> Any:
    """A peft model whose 'policy' adapter has random, non-zero A and B (so it changes outputs)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(model, lora_config(), adapter_name="policy")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Any:
    """A 3M-parameter model gains nothing from intra-op threads, and on a busy 2-core machine
    OpenMP barriers make two threads many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("tiny-random")


@pytest.fixture()
def fresh_engine(tokenizer: Any) -> HFEngine:
    """An engine over its own LoRA model, for tests that change the weights."""
    return HFEngine(with_lora(sharpened_tiny_model()), tokenizer=tokenizer, max_batch_size=4)


@pytest.fixture(scope="module")
def prompts(tokenizer: Any) -> list[list[int]]:
    return [render_prompt_ids(tokenizer, conversation) for conversation in CONVERSATIONS]


class TestHFEngineContract(EngineContract):
    @pytest.fixture(scope="class")
    @classmethod
    def engine(cls) -> HFEngine:
        return HFEngine(with_lora(sharpened_tiny_model()), tokenizer=load_tokenizer("tiny-random"), max_batch_size=4)

    @pytest.fixture(scope="class")
    @classmethod
    def adapter(cls, engine: HFEngine) -> Adapter:
        return Adapter(name="policy")

    @pytest.fixture(scope="class")
    @classmethod
    def reference(cls, engine: HFEngine) -> Any:
        return scorer(engine.model)


def recomputed_logprobs(model: Any, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    scaled = torch.log_softmax(logits / temperature, dim=-1)
    return scaled.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_logprobs_match_a_forward_pass(fresh_engine: HFEngine, prompts: list[list[int]], temperature: float) -> None:
    params = SamplingParams(temperature=temperature, max_tokens=10, seed=4, n=2)
    results = fresh_engine.generate(prompts, params, adapter=Adapter(name="policy"))
    fresh_engine.model.eval()
    for prompt, completions in zip(prompts, results):
        for completion in completions:
            expected = recomputed_logprobs(fresh_engine.model, prompt, completion.token_ids, temperature or 1.0)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_processed_logprobs_are_renormalised_over_the_nucleus(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    processed = HFEngine(fresh_engine.model, tokenizer=fresh_engine.tokenizer, logprobs_mode="processed")
    params = SamplingParams(temperature=1.0, top_p=0.3, max_tokens=8, seed=9)
    scaled_out = fresh_engine.generate(prompts, params)
    processed_out = processed.generate(prompts, params)
    for a, b in zip(scaled_out, processed_out):
        assert a[0].token_ids == b[0].token_ids, "the logprob convention must not change what is sampled"
        assert all(p >= s - 1e-6 for p, s in zip(b[0].logprobs, a[0].logprobs))
        assert any(p > s + 1e-3 for p, s in zip(b[0].logprobs, a[0].logprobs))


def test_seeded_sampling_is_reproducible_and_independent_of_batching(
    fresh_engine: HFEngine, prompts: list[list[int]]
) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=7, n=2)
    first = fresh_engine.generate(prompts, params)
    one_at_a_time = HFEngine(fresh_engine.model, tokenizer=fresh_engine.tokenizer, max_batch_size=1)
    ids = lambda results: [[c.token_ids for c in completions] for completions in results]  # noqa: E731
    assert ids(fresh_engine.generate(prompts, params)) == ids(first)
    assert ids(one_at_a_time.generate(prompts, params)) == ids(first)
    assert ids(fresh_engine.generate(prompts[:1], params)) == ids(first)[:1]
    other_seed = SamplingParams(temperature=1.0, max_tokens=8, seed=8, n=2)
    assert ids(fresh_engine.generate(prompts, other_seed)) != ids(first)


def test_samples_of_one_prompt_share_its_prefill(
    fresh_engine: HFEngine, prompts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = HFEngine(fresh_engine.model, tokenizer=fresh_engine.tokenizer, max_batch_size=8)
    batch = [prompts[0], prompts[1], prompts[0]]  # a repeated prompt shares too, not only n > 1
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=5, n=2)
    shapes: list[tuple[int, ...]] = []
    hook = engine.model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: shapes.append(tuple(args[0].shape)))
    shared = engine.generate(batch, params, adapter=Adapter(name="policy"))
    hook.remove()
    assert shapes[0][0] == 2 and shapes[1] == (6, 1)  # two distinct prompts prefilled, six rows decode
    monkeypatch.setattr(hf_engine, "_distinct_prompts", lambda rows: (list(rows), list(range(len(rows)))))
    separate = engine.generate(batch, params, adapter=Adapter(name="policy"))
    for group_a, group_b in zip(shared, separate, strict=True):
        for a, b in zip(group_a, group_b, strict=True):
            assert a.token_ids == b.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_unseeded_sampling_follows_torch_manual_seed(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=6)
    torch.manual_seed(123)
    first = [c[0].token_ids for c in fresh_engine.generate(prompts, params)]
    torch.manual_seed(123)
    assert [c[0].token_ids for c in fresh_engine.generate(prompts, params)] == first


def test_training_between_calls_changes_output(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    policy = Adapter(name="policy")
    before = [c[0].token_ids for c in fresh_engine.generate(prompts, greedy(8), adapter=policy)]
    base_before = [c[0].token_ids for c in fresh_engine.generate(prompts, greedy(8))]
    model = fresh_engine.model
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    optimizer = torch.optim.Adam(trainable, lr=0.05)
    target = torch.tensor([prompts[0] + [42] * 8])
    labels = target.clone()
    labels[0, : len(prompts[0])] = -100
    for _ in range(10):
        loss = model(input_ids=target, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = [c[0].token_ids for c in fresh_engine.generate(prompts, greedy(8), adapter=policy)]
    assert model.training, "generate must hand the model back in train mode"
    assert all(p.requires_grad for p in trainable)
    assert after != before
    assert after[0][:3] == [42, 42, 42], "the trained adapter should now prefer the trained token"
    assert [c[0].token_ids for c in fresh_engine.generate(prompts, greedy(8))] == base_before


def test_other_adapter_leaves_the_trainers_adapter_active(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    model = fresh_engine.model
    model.add_adapter("anchor", lora_config())
    model.set_adapter("policy")
    trainable_before = {n for n, p in model.named_parameters() if p.requires_grad}
    anchor = fresh_engine.generate(prompts, greedy(6), adapter=Adapter(name="anchor"))
    policy = fresh_engine.generate(prompts, greedy(6), adapter=Adapter(name="policy"))
    assert [c[0].token_ids for c in anchor] != [c[0].token_ids for c in policy]
    assert model.active_adapter == "policy"
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable_before
    assert all(".anchor." not in n for n in trainable_before)


def test_adapter_loads_from_path_and_reloads_on_a_new_version(
    fresh_engine: HFEngine, prompts: list[list[int]], tmp_path: Path
) -> None:
    from peft.utils import get_peft_model_state_dict

    fresh_engine.model.save_pretrained(tmp_path)
    folder = tmp_path / "policy"  # peft saves a named adapter in a folder of that name
    reference = fresh_engine.generate(prompts, greedy(8), adapter=Adapter(name="policy"))
    base_engine = HFEngine(sharpened_tiny_model(), tokenizer=fresh_engine.tokenizer)
    loaded = base_engine.generate(prompts, greedy(8), adapter=Adapter(name="policy", path=str(folder)))
    assert [c[0].token_ids for c in loaded] == [c[0].token_ids for c in reference]

    with torch.no_grad():  # publish a new version: different weights at the same path
        for name, parameter in fresh_engine.model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-3.0)
    fresh_engine.model.save_pretrained(tmp_path)
    updated_reference = fresh_engine.generate(prompts, greedy(8), adapter=Adapter(name="policy"))
    stale = base_engine.generate(prompts, greedy(8), adapter=Adapter(name="policy", path=str(folder)))
    assert [c[0].token_ids for c in stale] == [c[0].token_ids for c in loaded], "same version: no reload"
    new = base_engine.generate(prompts, greedy(8), adapter=Adapter(name="policy", path=str(folder), version=1))
    assert [c[0].token_ids for c in new] == [c[0].token_ids for c in updated_reference]
    assert set(get_peft_model_state_dict(base_engine.model, adapter_name="policy")) == set(
        get_peft_model_state_dict(fresh_engine.model, adapter_name="policy")
    )


def test_unknown_adapter_is_a_clear_error(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    with pytest.raises(ValueError, match="no adapter named 'missing'"):
        fresh_engine.generate(prompts, greedy(2), adapter=Adapter(name="missing"))


def test_text_is_the_decoded_ids_even_with_stop_strings(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=24, seed=1, n=4, stop=("e", " t", "."))
    stopped = 0
    for completions in fresh_engine.generate(prompts, params):
        for completion in completions:
            decoded = fresh_engine.tokenizer.decode(completion.token_ids, skip_special_tokens=True)
            assert completion.text == decoded
            if completion.finish_reason == "stop" and completion.stop_string:
                stopped += 1
                assert completion.stop_string in completion.text
    assert stopped > 0


def test_generation_stops_at_the_position_limit(fresh_engine: HFEngine, tokenizer: Any) -> None:
    limit = fresh_engine.max_positions
    assert limit is not None
    long_prompt = [tokenizer.encode(" word")[0]] * (limit - 3)
    too_long = [tokenizer.encode(" word")[0]] * limit
    results = fresh_engine.generate([long_prompt, too_long], greedy(10))
    assert len(results[0][0].token_ids) == 3 and results[0][0].finish_reason == "length"
    assert results[1][0].finish_reason == "error" and "positions" in (results[1][0].error or "")


def test_invalid_sampling_params_raise(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    with pytest.raises(ValueError):
        fresh_engine.generate(prompts, SamplingParams(n=0))
    with pytest.raises(ValueError):
        fresh_engine.generate(prompts, SamplingParams(top_p=0.0))


def test_registry_builds_the_hf_engine_lazily(tokenizer: Any) -> None:
    assert {"hf", "vllm", "openai"} <= set(list_engines())
    assert engine_class("hf") is HFEngine
    engine = make_engine("hf", model="tiny-random", max_batch_size=2)
    assert isinstance(engine, HFEngine) and engine.max_batch_size == 2
    with pytest.raises(ValueError, match="unknown engine 'nope'"):
        make_engine("nope")


@pytest.mark.slow
def test_smollm2_answers_a_simple_question() -> None:
    engine = HFEngine("smollm2-135m")
    conversation = [{"role": "user", "content": "What is the capital of France?"}]
    (completion,) = engine.generate([conversation], greedy(48))[0]
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop" and completion.token_ids[-1] in engine.eos_ids
    prompt = render_prompt_ids(engine.tokenizer, conversation)
    expected = recomputed_logprobs(engine.model, prompt, completion.token_ids, 1.0)
    assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    from agents.engines.sampling import nucleus_mask

    logprobs = torch.tensor([[0.15, 0.5, 0.05, 0.3]]).log()
    assert nucleus_mask(logprobs, 0.7).tolist() == [[True, False, True, False]]
    assert nucleus_mask(logprobs, 0.45).tolist() == [[True, False, True, True]]
    assert nucleus_mask(logprobs, 1.0).tolist() == [[False, False, False, False]]


def test_sampled_frequencies_follow_the_tempered_distribution() -> None:
    from agents.engines.sampling import choose_tokens

    rows, temperature = 4000, 0.5
    logits = torch.tensor([1.0, 0.0, -1.0, 0.5]).repeat(rows, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(rows)]
    tokens, logprobs = choose_tokens(logits, temperature=temperature, top_p=1.0, generators=generators)
    expected = torch.softmax(logits[0] / temperature, dim=-1)
    observed = torch.bincount(tokens, minlength=4).float() / rows
    assert torch.allclose(observed, expected, atol=0.03)
    assert torch.allclose(logprobs, expected.log()[tokens])


def test_stop_scanner_finds_a_stop_string_spanning_tokens(tokenizer: Any) -> None:
    from agents.engines.stopping import StopScanner

    ids = tokenizer.encode("I will <search>capital of France</search> then answer", add_special_tokens=False)
    scanner = StopScanner(tokenizer, ("</search>", "answer", ""))
    found = [scanner.scan(ids[:k]) for k in range(1, len(ids) + 1)]
    first = next(k for k, stop in enumerate(found) if stop)
    assert found[first] == "</search>"
    assert "</search>" in tokenizer.decode(ids[: first + 1]) and "</search>" not in tokenizer.decode(ids[:first])
    assert len(tokenizer.encode("</search>", add_special_tokens=False)) > 1, "the stop string should span tokens"
    assert StopScanner(tokenizer, ("answer", "I will")).scan(ids) == "I will", "the earliest-ending match wins"
    assert StopScanner(tokenizer, ()).scan(ids) is None


# -- structured generation ---------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1.3])
def test_constrained_logprobs_match_an_unmasked_forward_pass(
    fresh_engine: HFEngine, prompts: list[list[int]], temperature: float
) -> None:
    """At every temperature the reported logprobs are the tempered log-softmax before the mask."""
    params = SamplingParams(temperature=temperature, max_tokens=40, seed=4, n=2, constraint=CONSTRAINTS["regex"][0])
    results = fresh_engine.generate(prompts, params, adapter=Adapter(name="policy"))
    fresh_engine.model.eval()
    for prompt, completions in zip(prompts, results):
        for completion in completions:
            assert completion.extra["constrained"] and completion.token_ids[-1] in fresh_engine.eos_ids
            expected = recomputed_logprobs(fresh_engine.model, prompt, completion.token_ids, temperature or 1.0)
            assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.0, 1.0), (1.0, 1.0), (0.8, 0.9)])
def test_free_rows_of_a_constrained_batch_give_their_ids_alone(
    fresh_engine: HFEngine, prompts: list[list[int]], temperature: float, top_p: float
) -> None:
    """Rows without a constraint decode in one batch with constrained rows and give exactly the
    ids and logprobs they give in a batch of their own (same seed); the others match."""
    free = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=12, seed=3, n=2)
    constrained = replace(free, max_tokens=40, constraint=Constraint(regex=ANSWER_REGEX))
    alone = fresh_engine.generate(prompts, free)
    rows = [
        fresh_engine._row(i, j, ids, constrained if (i + j) % 2 else free, base_seed=3)
        for i, ids in enumerate(prompts) for j in range(2)
    ]
    fresh_engine._decode(rows, free, adapter=None)
    for row in rows:
        assert row.result is not None and row.result.ok
        if row.matcher is None:
            expected = alone[row.prompt][row.sample]
            assert row.result.token_ids == expected.token_ids and row.result.logprobs == expected.logprobs
            assert "constrained" not in row.result.extra
        else:
            assert re.fullmatch(ANSWER_REGEX, row.result.text) and row.result.extra["constrained"]


def test_processed_logprobs_of_a_constrained_row_are_the_masked_distributions(
    fresh_engine: HFEngine, prompts: list[list[int]]
) -> None:
    """"processed" mode reports the distribution sampled from: the mask renormalised over the
    allowed tokens, so never below the unmasked ("scaled") logprob of the same, equal choice."""
    processed = HFEngine(fresh_engine.model, tokenizer=fresh_engine.tokenizer, logprobs_mode="processed")
    params = SamplingParams(temperature=1.0, max_tokens=40, seed=9, constraint=Constraint(regex=ANSWER_REGEX))
    for a, b in zip(fresh_engine.generate(prompts, params), processed.generate(prompts, params)):
        assert a[0].token_ids == b[0].token_ids
        assert all(p >= s - 1e-6 for p, s in zip(b[0].logprobs, a[0].logprobs))
        assert max(p - s for p, s in zip(b[0].logprobs, a[0].logprobs)) > 1.0


def test_each_constraint_compiles_once_per_engine(fresh_engine: HFEngine, prompts: list[list[int]]) -> None:
    grammars = fresh_engine.grammars
    params = greedy(8, constraint=Constraint(regex=ANSWER_REGEX))
    fresh_engine.generate(prompts, params)
    compiled = grammars.compiled(Constraint(regex=ANSWER_REGEX))  # an equal constraint, another object
    fresh_engine.generate(prompts[:1], params)
    assert len(grammars._compiled) == 1 and grammars.compiled(params.constraint) is compiled


def test_masked_rows_choose_only_allowed_tokens_and_report_unmasked_logprobs() -> None:
    """The sampler with a mask on some rows: the others are computed exactly as without one."""
    import xgrammar

    from agents.engines.constraints import RowMask
    from agents.engines.sampling import choose_tokens

    rows, vocab, allowed = 6, 40, [3, 17, 33]
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)) * 3
    bitmask = torch.zeros(xgrammar.get_bitmask_shape(rows, vocab), dtype=torch.int32)
    for token in allowed:
        bitmask[:, token // 32] |= 1 << (token % 32)
    mask = RowMask(torch.tensor([1, 4]), bitmask, vocab)
    for temperature, top_p in [(0.0, 1.0), (1.0, 1.0), (0.7, 0.8)]:
        generators = lambda: [torch.Generator().manual_seed(i) for i in range(rows)]  # noqa: E731
        free_tokens, free_logprobs = choose_tokens(logits, temperature=temperature, top_p=top_p, generators=generators())
        tokens, logprobs = choose_tokens(logits, temperature=temperature, top_p=top_p, generators=generators(), mask=mask)
        for row in range(rows):
            if row in (1, 4):
                assert int(tokens[row]) in allowed
            else:
                assert int(tokens[row]) == int(free_tokens[row]) and float(logprobs[row]) == float(free_logprobs[row])
        scaled = torch.log_softmax(logits / (temperature or 1.0), dim=-1)
        assert torch.allclose(logprobs, scaled.gather(-1, tokens[:, None]).squeeze(-1))
