"""Multi-turn search rollouts on the `hf` engine with and without its turn cache.

Workload: the first 8 HotpotQA test questions x 2 samples (16 episodes) through the rollout
driver and the local retrieval server, SmolLM2-135M in fp32, temperature 1, 48 new tokens per
turn, up to 5 turns, one seed per round. The same engine runs with the turn cache (each turn
prefills only the tokens added since the last one) and without it (`turn_cache_bytes=0`,
every turn prefills the whole conversation); both sample the same tokens (checked), so the
figure of merit is wall time. Rows record generated tokens/s of both, the `speedup` and the
prompt tokens the cache spared. One warm-up round, then rounds alternate without / with.

    .venv/bin/python -m pytest benchmarks/test_turn_cache.py --benchmark-only -q -s
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents.engine import SamplingParams
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from benchmarks.workers.runtime import scale
from envs import registry
from envs.retrieval.local import ensure_local_server

pytestmark = pytest.mark.slow

MODEL, ENV = "smollm2-135m", "hotpotqa"
TASKS, SAMPLES = scale(8, 4), 2
NEW_TOKENS = 48
ROUNDS = scale(2, 1)


def test_search_rollouts_with_and_without_the_turn_cache(benchmark: Any, machine_load: None) -> None:
    from agents.engines.hf import HFEngine

    engine = HFEngine(MODEL, max_batch_size=64)
    url = ensure_local_server()
    factory = lambda: registry.make(ENV, split="test", retriever_url=url, tokenizer=engine.tokenizer)
    driver = RolloutDriver(engine, factory, RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS)))
    tasks = driver.envs(1)[0].tasks[:TASKS]
    episodes = [Episode(task, None, "p0", s) for task in tasks for s in range(SAMPLES)]
    budget = engine.turn_cache.max_bytes

    def run(reuse: bool, seed: int) -> tuple[float, list[Any], int]:
        engine.turn_cache.max_bytes = budget if reuse else 0
        spared = engine.turn_cache.reused_tokens
        started = time.perf_counter()
        trajectories = driver.run(episodes, seed=seed)
        return time.perf_counter() - started, trajectories, engine.turn_cache.reused_tokens - spared

    run(True, seed=0)  # warm-up: model, server, allocator
    plain_s, cached_s, tokens, spared, same = [], [], 0, 0, 0.0
    for round_ in range(ROUNDS):
        seconds, plain, _ = run(False, seed=round_ + 1)
        plain_s.append(seconds)
        seconds, cached, spared = run(True, seed=round_ + 1)
        cached_s.append(seconds)
        same = sum(a.token_ids == b.token_ids for a, b in zip(cached, plain)) / len(episodes)
        tokens = sum(t.n_sampled for t in cached)
    # Reuse changes float rounding only; a sample may flip at a near-tie, rarely.
    assert same >= 0.9, f"only {same:.0%} of episodes sampled the same tokens with and without reuse"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)  # the timing is ours, alternating above
    plain_mean, cached_mean = sum(plain_s) / ROUNDS, sum(cached_s) / ROUNDS
    benchmark.extra_info.update(
        episodes=len(episodes), generated_tokens=tokens, turns_max=max(len(t.turns) for t in cached),
        plain_s=round(plain_mean, 2), cached_s=round(cached_mean, 2),
        plain_tokens_per_s=round(tokens / plain_mean, 1), cached_tokens_per_s=round(tokens / cached_mean, 1),
        speedup=round(plain_mean / cached_mean, 2), prompt_tokens_spared=spared, same_samples=round(same, 3),
    )
    print(f"\nturn cache: {plain_mean:.1f} s -> {cached_mean:.1f} s ({plain_mean / cached_mean:.2f}x), {tokens} tokens")
