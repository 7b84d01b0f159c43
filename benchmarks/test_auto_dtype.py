"""`policy.dtype = "auto"` against both fixed dtypes: is it the faster one on this CPU?

`hf` engine generation with SmolLM2-135M, 32 chat prompts asking for long answers, 64 new
tokens, temperature-1 sampling, in float32, bfloat16 and auto (a model loaded with
`dtype="auto"`, the run's own path), measured in one run with alternating rounds. Each
setting's figure is its best round (the least disturbed by other jobs on a shared machine);
the medians are recorded too. Acceptance: auto within 5% of the faster fixed dtype.

    .venv/bin/python -m pytest benchmarks/test_auto_dtype.py --benchmark-only -q -s
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
import torch

from agents.chat import render_prompt_ids
from agents.devices import host_cpu_name, resolve_precision
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.models import load_model, load_tokenizer
from benchmarks.workers.runtime import scale

MODEL = "smollm2-135m"
BATCH = scale(32, 8)
NEW_TOKENS = scale(64, 16)
ROUNDS = scale(2, 1)
TOLERANCE = 0.05
TOPICS = ["a lighthouse keeper", "the history of bread", "a robot learning to paint", "tides and the moon",
          "a mountain village in winter", "how bees communicate", "a chess match", "an old library"]


def tokens_per_second(engine: HFEngine, prompts: list[list[int]], seed: int) -> float:
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=seed)
    started = time.perf_counter()
    tokens = sum(len(c[0].token_ids) for c in engine.generate(prompts, params))
    assert tokens >= len(prompts)
    return tokens / (time.perf_counter() - started)


@pytest.mark.slow
def test_auto_dtype_is_the_faster_dtype_here(benchmark: Any, machine_load: None) -> None:
    tokenizer = load_tokenizer(MODEL)
    prompts = [
        render_prompt_ids(tokenizer, [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}])
        for i in range(BATCH)
    ]
    engines = {
        setting: HFEngine(load_model(MODEL, dtype=setting), tokenizer=tokenizer, max_batch_size=BATCH)
        for setting in ("float32", "bfloat16", "auto")
    }
    precision = resolve_precision("cpu", "auto")
    assert engines["auto"].model.dtype == getattr(torch, precision.dtype)
    for engine in engines.values():  # warm-up: first-call allocations
        engine.generate(prompts[:2], SamplingParams(max_tokens=2, seed=0))

    rounds: dict[str, list[float]] = {setting: [] for setting in engines}

    def measure() -> None:
        for r in range(ROUNDS):
            order = list(engines) if r % 2 == 0 else list(reversed(engines))
            for setting in order:
                rounds[setting].append(tokens_per_second(engines[setting], prompts, seed=r))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    best = {setting: max(values) for setting, values in rounds.items()}
    faster = max(("float32", "bfloat16"), key=best.__getitem__)
    ratio = best["auto"] / best[faster]
    benchmark.extra_info.update(
        cpu=host_cpu_name(), auto_dtype=precision.dtype, auto_reason=precision.reason, batch=BATCH, new_tokens=NEW_TOKENS,
        tokens_per_s={s: round(v, 1) for s, v in best.items()},
        median_tokens_per_s={s: round(statistics.median(v), 1) for s, v in rounds.items()},
        bf16_over_fp32=round(best["bfloat16"] / best["float32"], 2), auto_over_faster=round(ratio, 3),
        auto_picked_the_faster=precision.dtype == faster,
    )
    print(f"\n{host_cpu_name()}: auto -> {precision.dtype} ({precision.reason})")
    for setting, values in rounds.items():
        print(f"  {setting:9s} best {best[setting]:7.1f} tok/s, rounds {[round(v, 1) for v in values]}")
    print(f"  bf16/fp32 {best['bfloat16'] / best['float32']:.2f}; auto / faster ({faster}) {ratio:.3f}")
    assert ratio >= 1 - TOLERANCE, f"auto ({precision.dtype}) makes {best['auto']:.1f} tok/s, {faster} {best[faster]:.1f}"
