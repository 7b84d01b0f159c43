"""The `hf` engine's reuse of keys/values across the turns of a conversation.

Reuse must be invisible except in speed: a continued conversation samples the same tokens with
the same logprobs as a full prefill, and any change of weights between calls drops what was kept.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_engine_hf
import torch
from test_engine_hf import sharpened_tiny_model, with_lora

from agents.chat import render_prompt_ids
from agents.engine import Adapter, SamplingParams
from agents.engines.hf import HFEngine
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from envs import registry
from envs.retrieval.local import ensure_local_server

CONVERSATIONS = [
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is two plus three? Think first."}],
    [{"role": "user", "content": "Write one word about rivers and one about mountains."}],
]
one_thread = test_engine_hf.one_thread  # the same fixtures as the engine's own tests
tokenizer = test_engine_hf.tokenizer

REPLY = [220, 1022, 1103, 30, 411]  # tokens the "environment" appends after each turn


def engines(tokenizer: Any) -> tuple[HFEngine, HFEngine]:
    """Two engines over one model: one reuses keys/values between calls, one never does."""
    model = with_lora(sharpened_tiny_model())
    reusing = HFEngine(model, tokenizer=tokenizer, max_batch_size=2)
    plain = HFEngine(model, tokenizer=tokenizer, max_batch_size=2, turn_cache_bytes=0)
    return reusing, plain


def play(engine: HFEngine, prompts: list[list[int]], turns: int, params: SamplingParams) -> list[list[Any]]:
    """Run `turns` turns: each prompt grows by what was sampled plus a fixed env reply."""
    history = []
    for _ in range(turns):
        completions = engine.generate(prompts, params, adapter=Adapter(name="policy"))
        history.append(completions)
        prompts = [prompt + group[0].token_ids + REPLY for prompt, group in zip(prompts, completions)]
    return history


def test_continued_turns_sample_what_a_full_prefill_samples(tokenizer: Any) -> None:
    reusing, plain = engines(tokenizer)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    params = SamplingParams(temperature=0.8, max_tokens=12, seed=3)
    with_reuse = play(reusing, prompts, turns=4, params=params)
    without = play(plain, prompts, turns=4, params=params)
    assert reusing.turn_cache.reused_tokens > 0
    assert plain.turn_cache.reused_tokens == 0
    for turn_a, turn_b in zip(with_reuse, without, strict=True):
        for (a,), (b,) in zip(turn_a, turn_b, strict=True):
            assert a.token_ids == b.token_ids
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


def test_every_turn_after_the_first_reuses_the_whole_previous_turn(tokenizer: Any) -> None:
    reusing, _ = engines(tokenizer)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    params = SamplingParams(temperature=0.0, max_tokens=6)
    first = reusing.generate(prompts, params, adapter=Adapter(name="policy"))
    assert reusing.turn_cache.reused_tokens == 0
    longer = [p + g[0].token_ids + REPLY for p, g in zip(prompts, first)]
    reusing.generate(longer, params, adapter=Adapter(name="policy"))
    expected = sum(len(p) + len(g[0].token_ids) - 1 for p, g in zip(prompts, first))
    assert reusing.turn_cache.reused_tokens == expected


def test_a_weight_update_between_calls_drops_the_kept_turns(tokenizer: Any) -> None:
    reusing, _ = engines(tokenizer)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    params = SamplingParams(temperature=0.0, max_tokens=6)
    first = reusing.generate(prompts, params, adapter=Adapter(name="policy"))
    with torch.no_grad():
        lora = next(p for n, p in reusing.model.named_parameters() if "lora_B" in n)
        lora.add_(0.5)  # what an optimizer step does: an in-place change
    longer = [p + g[0].token_ids + REPLY for p, g in zip(prompts, first)]
    reusing.generate(longer, params, adapter=Adapter(name="policy"))
    assert reusing.turn_cache.reused_tokens == 0


def test_other_adapter_settings_do_not_share_kept_turns(tokenizer: Any) -> None:
    reusing, _ = engines(tokenizer)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    params = SamplingParams(temperature=0.0, max_tokens=6)
    first = reusing.generate(prompts, params, adapter=Adapter(name="policy"))
    longer = [p + g[0].token_ids + REPLY for p, g in zip(prompts, first)]
    reusing.generate(longer, params, adapter=None)  # base weights: the policy's keys do not apply
    assert reusing.turn_cache.reused_tokens == 0


def test_the_byte_budget_bounds_what_is_kept(tokenizer: Any) -> None:
    model = with_lora(sharpened_tiny_model())
    engine = HFEngine(model, tokenizer=tokenizer, max_batch_size=4, turn_cache_bytes=1)
    prompts = [render_prompt_ids(tokenizer, c) for c in CONVERSATIONS]
    params = SamplingParams(temperature=0.0, max_tokens=6)
    first = engine.generate(prompts, params, adapter=Adapter(name="policy"))
    longer = [p + g[0].token_ids + REPLY for p, g in zip(prompts, first)]
    engine.generate(longer, params, adapter=Adapter(name="policy"))
    assert engine.turn_cache.reused_tokens == 0


def test_a_search_rollout_reuses_its_turns_and_releases_them_at_the_end(tokenizer: Any) -> None:
    """Through the rollout driver and a real retrieval server: each turn continues the last."""
    reusing, _ = engines(tokenizer)
    url = ensure_local_server()
    env_factory = lambda: registry.make("hotpotqa", split="test", retriever_url=url, tokenizer=tokenizer)
    driver = RolloutDriver(reusing, env_factory, RolloutConfig(sampling=SamplingParams(max_tokens=8), max_turns=3))
    tasks = driver.envs(1)[0].tasks[:2]
    trajectories = driver.run([Episode(t, None, "p0", s) for t in tasks for s in range(2)], Adapter(name="policy"), seed=1)
    assert all(len(t.turns) > 1 for t in trajectories)  # random text: corrective replies, more turns
    assert reusing.turn_cache.reused_tokens >= sum(t.turns[1].start for t in trajectories) - len(trajectories)
    assert reusing.turn_cache.kept_sequences == 0
