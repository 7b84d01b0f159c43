"""Throughput of the `hf` engine against raw `model.generate` on the same workload.

SmolLM2-135M, chat prompts asking for long answers, batch 8 and 32, 64 new tokens,
temperature-1 sampling (top-k off on both sides), fp32 and bf16. Throughput counts the tokens
each side actually returns (up to and including EOS); the engine also pays for what
`generate` does not give: exact per-token logprobs, per-sequence seeded noise and stop
strings. The engine's row records `ratio_vs_generate` (engine tok/s / generate tok/s),
measured in the same run.

    .venv/bin/python -m pytest benchmarks/test_engine_hf.py --benchmark-only -q
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch

from agents.chat import render_prompt_ids
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.models import load_model, load_tokenizer

NEW_TOKENS = 64
TOPICS = ["a lighthouse keeper", "the history of bread", "a robot learning to paint", "tides and the moon",
          "a mountain village in winter", "how bees communicate", "a chess match", "an old library"]
_throughput: dict[tuple[str, int, str], float] = {}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    return {dtype: load_model("smollm2-135m", dtype=dtype) for dtype in ("float32", "bfloat16")}


def prompts(tokenizer: Any, batch: int) -> list[list[int]]:
    return [
        render_prompt_ids(tokenizer, [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}])
        for i in range(batch)
    ]


def generate_with_hf(model: Any, tokenizer: Any, batch: list[list[int]]) -> int:
    """`model.generate` on the left-padded batch; returns the tokens up to each row's EOS."""
    width = max(map(len, batch))
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    with torch.inference_mode():
        out = model.generate(
            input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
            max_new_tokens=NEW_TOKENS, pad_token_id=pad,
        )
    new = out[:, width:].tolist()
    eos = tokenizer.eos_token_id
    return sum(row.index(eos) + 1 if eos in row else len(row) for row in new)


def generate_with_engine(engine: HFEngine, batch: list[list[int]]) -> int:
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=0)
    return sum(len(c[0].token_ids) for c in engine.generate(batch, params))


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["hf_generate", "espl_hf_engine"])
@pytest.mark.parametrize("batch_size", [8, 32])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_generation_throughput(benchmark: Any, models: dict[str, Any], tokenizer: Any,
                               dtype: str, batch_size: int, runner: str) -> None:
    model = models[dtype]
    batch = prompts(tokenizer, batch_size)
    engine = HFEngine(model, tokenizer=tokenizer, max_batch_size=batch_size)
    torch.manual_seed(0)
    if runner == "hf_generate":
        run = lambda: generate_with_hf(model, tokenizer, batch)  # noqa: E731
    else:
        run = lambda: generate_with_engine(engine, batch)  # noqa: E731
    with torch.inference_mode():  # warm-up: first-call allocations on both paths
        model.generate(input_ids=torch.tensor([batch[0]]), max_new_tokens=2, pad_token_id=tokenizer.pad_token_id)
    engine.generate(batch[:2], SamplingParams(max_tokens=2, seed=0))
    benchmark.group = f"{dtype} batch {batch_size}"
    started = time.perf_counter()
    tokens = benchmark.pedantic(run, rounds=1, iterations=1)
    tokens_per_s = tokens / (time.perf_counter() - started)
    assert tokens >= batch_size
    _throughput[(runner, batch_size, dtype)] = tokens_per_s
    benchmark.extra_info.update(tokens=tokens, tokens_per_s=round(tokens_per_s, 1), torch_threads=torch.get_num_threads())
    peer = _throughput.get(("hf_generate", batch_size, dtype))
    if runner == "espl_hf_engine" and peer:
        benchmark.extra_info["ratio_vs_generate"] = round(tokens_per_s / peer, 2)
    print(f"\n{runner} {dtype} batch {batch_size}: {tokens} tokens, {tokens_per_s:.1f} tok/s")
