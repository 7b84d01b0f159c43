"""How often a mutation attempt yields a child when the reflector is the embedded 135M model,
with and without structured (constrained) decoding of its edit lists.

Each attempt: SmolLM2-135M (`hf`, float32) answers B=4 arithmetic problems N=4 times under the
built-in seed prompt (temperature 1, a fresh seed per attempt), then `mutate` reflects on
those rollouts with the same model as reflector (adapter off, as the harness's default
reflector is the policy's frozen base), with the default `MutationConfig` and
`reflect_on_failures` on, so every attempt has problems to reflect on. `structured` decodes
each critique and the revision plan against the JSON schema of their edit lists
(`espl.evolution.operators.edit_schema`); `free` is the reflector without constraints (how
the harness ran before, and what engines without constraints still do).

The row reports the share of attempts that produced a child (the goal: 80% or more), why the
others did not, and an example child's principles.

    .venv/bin/python -m pytest benchmarks/test_structured_reflection.py --benchmark-only -q -s

`ESPL_BENCH_QUICK=1`: 5 attempts per row.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.models import load_model, load_tokenizer
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from benchmarks.workers.runtime import scale
from envs import registry
from espl.evolution.operators.mutation import MutationConfig, mutate
from espl.evolution.reflector import DEFAULT_REFLECTION_SAMPLING, Reflector
from espl.evolution.system_prompt import SystemPrompt
from espl.run.context import DEFAULT_PRINCIPLES

ATTEMPTS = scale(20, 5)
PROBLEMS, SAMPLES = 4, 4


@pytest.fixture(scope="module")
def engine() -> HFEngine:
    return HFEngine(load_model("smollm2-135m", dtype="float32"), tokenizer=load_tokenizer("smollm2-135m"),
                    max_batch_size=32)


@pytest.mark.slow
@pytest.mark.parametrize("decoding", ["structured", "free"])
def test_mutation_attempts_that_make_a_child(benchmark: Any, machine_load: None, engine: HFEngine, decoding: str) -> None:
    driver = RolloutDriver(engine, lambda: registry.make("arithmetic", split="train"),
                           RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=64), max_total_tokens=1024))
    tasks = driver.envs(1)[0].tasks
    parent = SystemPrompt("p0", DEFAULT_PRINCIPLES)
    reflector = Reflector(engine, DEFAULT_REFLECTION_SAMPLING, adapter=None, structured=decoding == "structured")
    config = MutationConfig(reflect_on_failures=True)
    outcomes: list[str | None] = []
    example: list[str] = []

    def attempt(k: int) -> None:
        batch = [tasks[(k * PROBLEMS + i) % len(tasks)] for i in range(PROBLEMS)]
        episodes = [Episode(task, parent.text, parent.id, s) for task in batch for s in range(SAMPLES)]
        rollouts = driver.run(episodes, None, seed=1000 + k)
        reflector.begin(seed=k)
        proposal = mutate(parent, rollouts, reflector, step=k + 1, new_id=f"c{k}", config=config)
        outcomes.append(None if proposal.child is not None else proposal.reason)
        print(f"{decoding} attempt {k + 1}/{ATTEMPTS}: {'child' if proposal.child is not None else proposal.reason}",
              flush=True)
        if proposal.child is not None and not example:
            example.extend(proposal.child.principles)

    attempts = iter(range(ATTEMPTS))
    benchmark.pedantic(lambda: attempt(next(attempts)), rounds=ATTEMPTS, iterations=1)
    children = sum(1 for outcome in outcomes if outcome is None)
    reasons = Counter(outcome for outcome in outcomes if outcome is not None)
    benchmark.extra_info.update(attempts=len(outcomes), children=children, share=children / len(outcomes),
                                reasons=dict(reasons), example_child=example)
    print(f"\n{decoding}: {children}/{len(outcomes)} attempts made a child; no child: {dict(reasons)}; "
          f"example child: {example}")
    assert len(outcomes) == ATTEMPTS
