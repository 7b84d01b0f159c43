"""Cost of structured generation in the `hf` engine: constrained against free decoding.

SmolLM2-135M in float32, batch 32 chat prompts, up to 64 new tokens at temperature 1. Each row
decodes the same batch free and under a constraint, alternating (`ROUNDS` each), and reports
the time per decoding step of the batch (its wall time over its longest completion: the
batch steps until its last row ends), the constrained row's `overhead` = constrained
s/step / free s/step - 1, tokens per second of what each returned (EOS included; lower for
the constrained side when its outputs are shorter, since the batch then steps with fewer
rows), and the share of constrained outputs that match. The constraints are the two the harness uses: Search-R1's action format
(`SearchEnv.action_regex`, a regular expression) and the critique's edit list
(`edit_list_schema`, a JSON schema with two principles to modify or add to).

Per step the engine fills xgrammar's token bitmask for the constrained rows on the CPU,
applies it to those rows' logits, and advances each row's matcher by its token; free rows pay
nothing. A compiled grammar is cached per engine, so its compilation (one-off, reported as
`compile_s`) is outside the timed rounds.

    .venv/bin/python -m pytest benchmarks/test_constrained_decoding.py --benchmark-only -q -s
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from agents.chat import render_prompt_ids
from agents.engine import Constraint, SamplingParams
from agents.engines.hf import HFEngine
from agents.models import load_model, load_tokenizer
from benchmarks.workers.runtime import QUICK
from envs.search.env import SearchEnv
from espl.evolution.operators.edit_schema import edit_list_schema
from espl.evolution.operators.edits import ADD, MODIFY, EditRules

BATCH = 32
NEW_TOKENS = 64
ROUNDS = 1 if QUICK else 3
QUESTIONS = ["Which river is longer, the Nile or the Amazon?", "Who wrote the novel Dracula?",
             "Were Scott Derrickson and Ed Wood of the same nationality?", "What is the capital of Australia?"]


def _edit_schema() -> dict[str, Any]:
    return edit_list_schema(EditRules(allowed_ops=frozenset({ADD, MODIFY}), n_principles=2, max_edits=2))


CONSTRAINTS = {
    "search_action_regex": Constraint(regex=SearchEnv.action_regex),
    "edit_list_schema": Constraint.schema(_edit_schema()),
}


def _matches(kind: str, text: str) -> bool:
    if kind == "search_action_regex":
        return re.fullmatch(SearchEnv.action_regex, text) is not None
    try:
        return isinstance(json.loads(text, strict=False), list)
    except ValueError:
        return False


@pytest.fixture(scope="module")
def engine() -> HFEngine:
    tokenizer = load_tokenizer("smollm2-135m")
    return HFEngine(load_model("smollm2-135m", dtype="float32"), tokenizer=tokenizer, max_batch_size=BATCH)


def _prompts(engine: HFEngine) -> list[list[int]]:
    return [render_prompt_ids(engine.tokenizer, [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}])
            for i in range(BATCH)]


def _decode(engine: HFEngine, prompts: list[list[int]], constraint: Constraint | None, seed: int):
    params = SamplingParams(temperature=1.0, max_tokens=NEW_TOKENS, seed=seed, constraint=constraint)
    started = time.perf_counter()
    results = engine.generate(prompts, params)
    seconds = time.perf_counter() - started
    completions = [c[0] for c in results]
    return sum(len(c.token_ids) for c in completions), seconds, completions, max(len(c.token_ids) for c in completions)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(CONSTRAINTS))
def test_constrained_vs_free_decoding(benchmark: Any, machine_load: None, engine: HFEngine, kind: str) -> None:
    prompts = _prompts(engine)
    constraint = CONSTRAINTS[kind]
    started = time.perf_counter()
    _decode(engine, prompts[:1], constraint, seed=0)  # compiles the grammar once (cached per engine)
    compile_s = time.perf_counter() - started
    _decode(engine, prompts, None, seed=0)  # warm-up
    free_tokens = free_s = constrained_tokens = constrained_s = free_steps = constrained_steps = 0.0
    matched = total = 0

    def one_round(seed: int) -> None:
        nonlocal free_tokens, free_s, constrained_tokens, constrained_s, matched, total, free_steps, constrained_steps
        tokens, seconds, _, steps = _decode(engine, prompts, None, seed)
        free_tokens, free_s, free_steps = free_tokens + tokens, free_s + seconds, free_steps + steps
        tokens, seconds, completions, steps = _decode(engine, prompts, constraint, seed)
        constrained_tokens, constrained_s = constrained_tokens + tokens, constrained_s + seconds
        constrained_steps += steps
        finished = [c for c in completions if c.finish_reason == "stop"]
        matched += sum(_matches(kind, c.text) for c in finished)
        total += len(finished)

    seeds = iter(range(1, 10_000))
    benchmark.pedantic(lambda: one_round(next(seeds)), rounds=ROUNDS, iterations=1)
    free_rate, constrained_rate = free_tokens / free_s, constrained_tokens / constrained_s
    free_step, constrained_step = free_s / free_steps, constrained_s / constrained_steps
    overhead = constrained_step / free_step - 1.0
    benchmark.extra_info.update(
        batch=BATCH, new_tokens=NEW_TOKENS, compile_s=round(compile_s, 2),
        free_ms_per_step=round(1000 * free_step, 1), constrained_ms_per_step=round(1000 * constrained_step, 1),
        overhead=round(overhead, 3), free_tok_s=round(free_rate, 1), constrained_tok_s=round(constrained_rate, 1),
        finished=total, finished_matching=matched,
    )
    print(f"\n{kind}: {1000 * free_step:.0f} ms/step free, {1000 * constrained_step:.0f} ms/step constrained, "
          f"overhead {overhead:.1%}; {free_rate:.0f} vs {constrained_rate:.0f} tok/s; "
          f"{matched}/{total} finished outputs match; compile {compile_s:.2f} s")
    assert total == 0 or matched == total
