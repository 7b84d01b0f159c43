"""Throughput of `VLLMEngine` against raw `vllm.LLM.generate` on the same engine instance.

Workload: SmolLM2-135M-Instruct in bf16, 8 / 32 / 128 chat prompts, 64 new tokens each,
temperature 1, the sampled token's logprob requested on both sides (what a rollout asks for).
The difference is the wrapper's cost: prompt validation, building requests, reading back
ids/logprobs and decoding the text. Each round records generated tokens per second in
`extra_info` (tok/s), plus the time it took to build the engine.

Run: ``.venv/bin/python -m pytest benchmarks/test_engine_vllm.py --benchmark-only -q``
(the engine runs in process by default; set ``VLLM_ENABLE_V1_MULTIPROCESSING=1`` to measure
vLLM's multiprocess mode, where ``VLLM_CPU_OMP_THREADS_BIND`` pins its worker to our cores).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from agents.chat import render_prompt_ids
from agents.engine import SamplingParams
from benchmarks.peers import require

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

NEW_TOKENS = 64
BATCHES = (8, 32, 128)
QUESTIONS = [
    "Explain why the sky is blue.",
    "Write a short poem about rivers.",
    "What is the capital of France, and why is it famous?",
    "Describe how a bicycle works.",
    "List three uses of a paperclip.",
    "Summarise the plot of a detective story you invent.",
    "How do plants make food?",
    "Give advice to a new programmer.",
]


@pytest.fixture(scope="module")
def engine() -> Any:
    require("vllm")
    from agents.engines.vllm import VLLMEngine

    start = time.perf_counter()
    engine = VLLMEngine("smollm2-135m", dtype="bfloat16", kv_cache_gib=2, max_model_len=2048)
    engine.construction_seconds = time.perf_counter() - start  # type: ignore[attr-defined]
    engine.generate([[1, 2, 3]], SamplingParams(max_tokens=4))  # warm up
    yield engine
    engine.close()


def prompts(engine: Any, count: int) -> list[list[int]]:
    return [
        render_prompt_ids(engine.tokenizer, [{"role": "user", "content": f"{QUESTIONS[i % len(QUESTIONS)]} ({i})"}])
        for i in range(count)
    ]


def run_and_report(benchmark: Any, engine: Any, work: Any, count: int) -> None:
    tokens: list[int] = []

    def once() -> None:
        tokens.append(work())

    benchmark.pedantic(once, rounds=1 if count >= 128 else 2, iterations=1, warmup_rounds=0)
    benchmark.extra_info["prompts"] = count
    benchmark.extra_info["generated_tokens"] = tokens[-1]
    benchmark.extra_info["tok_per_s"] = round(tokens[-1] / benchmark.stats.stats.median, 1)
    benchmark.extra_info["construction_s"] = round(engine.construction_seconds, 1)


@pytest.mark.parametrize("count", BATCHES)
def test_engine_generate(benchmark: Any, engine: Any, count: int) -> None:
    batch = prompts(engine, count)
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS)

    def work() -> int:
        results = engine.generate(batch, params)
        assert all(c[0].ok for c in results)
        return sum(len(c[0].token_ids) for c in results)

    benchmark.group = f"vllm {count} prompts"
    run_and_report(benchmark, engine, work, count)


@pytest.mark.parametrize("count", BATCHES)
def test_raw_llm_generate(benchmark: Any, engine: Any, count: int) -> None:
    from vllm import SamplingParams as VLLMSamplingParams
    from vllm.inputs import TokensPrompt

    batch = [TokensPrompt(prompt_token_ids=ids) for ids in prompts(engine, count)]
    params = VLLMSamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, logprobs=0)

    def work() -> int:
        outputs = engine.llm.generate(batch, params, use_tqdm=False)
        return sum(len(o.outputs[0].token_ids) for o in outputs)

    benchmark.group = f"vllm {count} prompts"
    run_and_report(benchmark, engine, work, count)
