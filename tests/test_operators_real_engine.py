"""The operators end to end on a real in-process engine (the tiny random model).

Its generations are noise, so no child is expected: the point is that real chat templates,
real token counting and real garbage flow through every stage without an exception.
"""

from __future__ import annotations

import pytest
from test_operators_support import trajectory

from agents.engine import SamplingParams
from espl.evolution.operators import CrossoverConfig, MutationConfig, Proposal, crossover, is_valid_principle, mutate
from espl.evolution.reflector import Reflector
from espl.evolution.population import Population

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reflector() -> Reflector:
    hf = pytest.importorskip("agents.engines.hf")
    engine = hf.HFEngine(model="tiny-random", max_batch_size=8)
    return Reflector(engine, SamplingParams(temperature=1.0, max_tokens=32, seed=0, logprobs=False))


def check(result: Proposal) -> None:
    assert (result.child is None) == (result.reason is not None)
    if result.child is not None:
        assert all(is_valid_principle(p) for p in result.child.principles)


def test_mutation_with_the_tiny_model(reflector: Reflector):
    population = Population()
    parent = population.create(["Read the question twice.", "Give the final answer in a box."], step=0)
    rollouts = [
        trajectory("t1", 1.0, parent.id, reply="2 + 2 = 4. \\boxed{4}"),
        trajectory("t1", 0.0, parent.id, reply="The answer is 5."),
    ]
    before = reflector.usage.copy()
    config = MutationConfig(summary_tokens=16, critique_tokens=24, plan_tokens=24, verbatim_words=0)
    result = mutate(parent, rollouts, reflector, step=1, new_id=population.new_id, config=config)
    check(result)
    assert result.usage.calls >= 2 and result.usage.batches >= 1  # at least the summaries ran
    assert result.usage.batches <= 3
    assert result.usage.prompt_tokens > 100 * 2  # counted through the real chat template
    assert not result.usage.estimated_prompt_tokens
    assert 0 < result.usage.completion_tokens <= 24 * result.usage.calls  # the stage caps held
    assert (reflector.usage - before).calls == result.usage.calls


def test_crossover_with_the_tiny_model(reflector: Reflector):
    population = Population()
    a = population.create(["Think step by step."], step=0)
    b = population.create(["Search before answering."], step=0)
    rollouts = [trajectory("t1", 1.0, a.id), trajectory("t1", 0.0, b.id),
                trajectory("t2", 0.0, a.id), trajectory("t2", 1.0, b.id), trajectory("t3", 1.0, a.id),
                trajectory("t3", 0.0, b.id)]
    config = CrossoverConfig(reply_tokens=32)
    result = crossover([a, b], rollouts, reflector, step=1, new_id=population.new_id, config=config)
    check(result)
    assert result.usage.calls == 1 and result.usage.batches == 1
    assert 0 < result.usage.completion_tokens <= 32
