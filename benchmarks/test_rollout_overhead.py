"""Rollout throughput: `RolloutDriver` against the raw engine's `generate` on the same work.

Workload: GSM8K test questions (a single-turn math env, so the env's part is answer
verification only), rendered with the chat template; one sample each at temperature 1, 64 new
tokens. The raw side gets exactly the token prompts the driver renders and the same sampling
parameters with the same seed, so both sample the same tokens (checked for `hf`). Each round
runs raw then driver with a fresh seed; one warm-up round first (it also starts the verifier
pool). The fixture times the driver; `extra_info` holds both throughputs (generated tokens/s),
`overhead` = raw tok/s / driver tok/s - 1 (target <= 0.05), the env (verification) time, and
`overhead_without_env`, the driver's own cost once verification is taken out.

Cases: `hf` fp32 and bf16 with 32 prompts; `vllm` bf16 with 32 and 128 prompts (marked
`vllm`). `ESPL_BENCH_QUICK=1`: 8 / 16 prompts, 32 tokens, one timed round.

    .venv/bin/python -m pytest benchmarks/test_rollout_overhead.py --benchmark-only -q -s
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from agents import chat
from agents.engine import SamplingParams
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from benchmarks.peers import require
from benchmarks.workers.runtime import scale
from envs import registry

pytestmark = pytest.mark.slow

MODEL, ENV = "smollm2-135m", "gsm8k"
NEW_TOKENS = scale(64, 32)
ROUNDS = scale(3, 1)
CASES = [
    pytest.param("hf", "float32", scale(32, 8), id="hf-fp32"),
    pytest.param("hf", "bfloat16", scale(32, 8), id="hf-bf16"),
    pytest.param("vllm", "bfloat16", scale(32, 8), id="vllm-bf16", marks=pytest.mark.vllm),
    pytest.param("vllm", "bfloat16", scale(128, 16), id="vllm-bf16-large", marks=pytest.mark.vllm),
]


@pytest.fixture(scope="module")
def engines() -> Iterator[dict[tuple[str, str], Any]]:
    """Engines built on first use and kept for the module (one vLLM engine serves both sizes)."""
    built: dict[tuple[str, str], Any] = {}
    yield built
    for engine in built.values():
        engine.close()


def get_engine(engines: dict[tuple[str, str], Any], kind: str, dtype: str) -> Any:
    if (kind, dtype) not in engines:
        if kind == "hf":
            from agents.engines.hf import HFEngine

            engines[kind, dtype] = HFEngine(MODEL, dtype=dtype, max_batch_size=128)
        else:
            require("vllm")
            from agents.engines.vllm import VLLMEngine

            engines[kind, dtype] = VLLMEngine(MODEL, dtype=dtype, enable_lora=False, kv_cache_gib=2, max_model_len=2048)
    return engines[kind, dtype]


@pytest.mark.parametrize(("kind", "dtype", "prompts"), CASES)
def test_rollout_vs_raw_engine(benchmark: Any, machine_load: None, engines: dict[tuple[str, str], Any],
                               kind: str, dtype: str, prompts: int) -> None:
    from envs.math.verify import default_verifier

    engine = get_engine(engines, kind, dtype)
    default_verifier().start()
    tasks = list(registry.make(ENV).tasks)[:prompts]
    driver = RolloutDriver(engine, lambda: registry.make(ENV),
                           RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS)))
    envs = driver.envs(prompts)
    raw_prompts = [
        chat.render_prompt_ids(engine.tokenizer, env.initial_messages(task), system_prompt=None, placement="system")
        for env, task in zip(envs, tasks)
    ]
    episodes = [Episode(task, None, "p0", 0) for task in tasks]
    rounds: list[dict[str, Any]] = []

    def raw_round() -> None:
        import time

        seed = 100 + len(rounds)
        params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=seed * 1000)  # the driver's turn-0 seed
        started = time.perf_counter()
        outputs = engine.generate(raw_prompts, params)
        rounds.append({"seed": seed, "raw_s": time.perf_counter() - started,
                       "raw_tokens": [len(c[0].token_ids) for c in outputs]})

    def driver_round() -> None:
        import time

        current = rounds[-1]
        started = time.perf_counter()
        trajectories = driver.run(episodes, None, seed=current["seed"])
        current["driver_s"] = time.perf_counter() - started
        current["driver_tokens"] = [t.n_sampled for t in trajectories]
        current["env_s"] = sum(t.timings.get("env_s", 0.0) for t in trajectories)
        current["errors"] = sum(t.error is not None for t in trajectories)
        current["prompt_ids_match"] = all(
            t.token_ids[: len(p)] == p for t, p in zip(trajectories, raw_prompts)
        )
        current["rewards"] = [t.reward for t in trajectories]

    benchmark.pedantic(driver_round, setup=raw_round, rounds=ROUNDS, warmup_rounds=1, iterations=1)

    timed = rounds[1:]
    assert len(timed) == ROUNDS
    for r in rounds:
        assert r["errors"] == 0 and r["prompt_ids_match"]
        assert all(reward in (0.0, 1.0) for reward in r["rewards"])
        if kind == "hf":  # seeded per (seed, prompt, sample): both sides sample the same tokens
            assert r["driver_tokens"] == r["raw_tokens"]
    raw_tokens = sum(sum(r["raw_tokens"]) for r in timed)
    driver_tokens = sum(sum(r["driver_tokens"]) for r in timed)
    raw_s, driver_s = sum(r["raw_s"] for r in timed), sum(r["driver_s"] for r in timed)
    env_s = sum(r["env_s"] for r in timed)
    raw_tok_s, driver_tok_s = raw_tokens / raw_s, driver_tokens / driver_s
    benchmark.extra_info.update(
        engine=kind, dtype=dtype, prompts=prompts, new_tokens=NEW_TOKENS, rounds=ROUNDS,
        raw_tok_s=round(raw_tok_s, 1),
        driver_tok_s=round(driver_tok_s, 1),
        ratio=round(driver_tok_s / raw_tok_s, 4),
        overhead=round(raw_tok_s / driver_tok_s - 1, 4),
        env_s_per_round=round(env_s / ROUNDS, 4),
        overhead_without_env=round(raw_tok_s / (driver_tokens / (driver_s - env_s)) - 1, 4),
        raw_tokens=raw_tokens, driver_tokens=driver_tokens,
    )
    print(f"\nrollout overhead {kind}/{dtype}/{prompts}:", benchmark.extra_info)
