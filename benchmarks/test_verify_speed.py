"""Answers/s of `MathVerifier` vs math-verify called directly in one process.

Workloads: 1,000 (reply, gold) pairs shaped like an RL rollout batch, 125 problems x 8 sampled
replies. "math500+gsm8k" draws the problems (seeded) half from GSM8K and half from MATH-500;
"dapo" draws them from the DAPO-Math training subset. Each reply is 8-48 lines of reasoning
(about 700-4,000 characters, 200-1,000 tokens: modest for RL rollouts) followed by one of: the
gold boxed (35%), the gold boxed in another format or stated without a box (20%), a wrong boxed
answer drawn from two distractors per problem (30%), a wrong unboxed final sentence (5%), or no
final answer (10%).

The baseline is what a user would otherwise write: ``verify(parse("\\boxed{gold}"),
parse(reply))`` with math-verify's default settings, one pair after another, in a process
that has already run the workload (its rate for the ratio is the best of two runs). Our
verifier is warmed the same way, and before each timed round every memo of verdicts, parsed
answers and verify results is cleared, here and in the workers. Run:

    .venv/bin/python -m pytest benchmarks/test_verify_speed.py --benchmark-only -q
"""

from __future__ import annotations

import os
import random
import statistics
import time

import pytest

from envs.datasets import load_rows
from envs.math.extract import plain_integer
from envs.math.verify import MathVerifier

N_PROBLEMS = 125
SAMPLES_PER_PROBLEM = 8
ROUNDS = 3

STEPS = [
    "First, let us restate the problem in terms of the quantities we know.",
    "We set up an equation: $3x + 5 = 2x + 11$, which gives $x = 6$ after simplifying.",
    "Next, note that $\\frac{a}{b} = \\frac{2a}{2b}$, so the ratio does not change when both parts double.",
    "Checking the boundary case $n = 1$ shows the pattern holds, with $1^2 + 1 = 2$ items.",
    "Multiplying out, $(x+2)(x-3) = x^2 - x - 6$, and the roots are $x = -2$ and $x = 3$.",
    "Adding the two amounts gives 12 + 30 = 42 units in total before the discount.",
    "Since the area is $\\pi r^2$ and $r = 4$, the area is $16\\pi$ square units.",
    "Let me double-check the arithmetic: 15 * 4 = 60 and 60 - 18 = 42.",
]


def _formatted(gold: str, rng: random.Random) -> str:
    """The gold answer written differently but equivalently."""
    value = plain_integer(gold)
    if value is not None:
        options = [f"\\boxed{{{value:,}}}" if abs(value) >= 1000 else f"\\boxed{{{value}.0}}",
                   f"\\boxed{{{value}\\text{{ units}}}}", f"The final answer is ${value}$."]
    else:
        options = [f"\\boxed{{{gold.replace(chr(92) + 'frac', chr(92) + 'dfrac')}}}",
                   f"\\boxed{{ {gold} }}", f"The final answer is ${gold}$."]
    return rng.choice(options)


def _distractors(gold: str, other_golds: list[str], rng: random.Random) -> list[str]:
    value = plain_integer(gold)
    if value is not None:
        return [str(value + rng.choice([-10, -2, -1, 1, 2, 5])), str(value * 2 + 1)]
    return rng.sample([g for g in other_golds if g != gold], 2)


WORKLOADS = {"math500+gsm8k": ("gsm8k_test", "math500"), "dapo": ("dapo_math_17k_subset2000",)}


def realistic_workload(files: tuple[str, ...] = WORKLOADS["math500+gsm8k"], seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    golds = []
    for i, name in enumerate(files):
        share = N_PROBLEMS // len(files) + (1 if i < N_PROBLEMS % len(files) else 0)
        golds += [r["answer"] for r in rng.sample(list(load_rows(name)), share)]
    pairs = []
    for gold in golds:
        wrong = _distractors(gold, golds, rng)
        for _ in range(SAMPLES_PER_PROBLEM):
            reasoning = "\n".join(rng.choices(STEPS, k=rng.randint(8, 48)))
            roll = rng.random()
            if roll < 0.35:
                ending = f"So the answer is $\\boxed{{{gold}}}$."
            elif roll < 0.55:
                ending = _formatted(gold, rng)
            elif roll < 0.85:
                ending = f"Therefore the answer is $\\boxed{{{rng.choice(wrong)}}}$."
            elif roll < 0.90:
                ending = f"The final answer is {rng.choice(wrong)}."
            else:
                ending = "I need to reconsider the second step, since"
            pairs.append((f"{reasoning}\n\n{ending}", gold))
    return pairs


def math_verify_direct(pairs: list[tuple[str, str]]) -> list[float]:
    from math_verify import parse, verify

    return [float(verify(parse(f"\\boxed{{{gold}}}"), parse(reply))) for reply, gold in pairs]


@pytest.fixture(scope="module", params=list(WORKLOADS))
def workload(request) -> list[tuple[str, str]]:
    return realistic_workload(WORKLOADS[request.param])


def _children_cpu_s() -> float:
    """CPU seconds of live child processes (the verifier's workers); 0 without psutil."""
    try:
        import psutil
    except ImportError:
        return 0.0
    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@pytest.fixture(scope="module")
def direct_rewards_and_rate(workload):
    math_verify_direct(workload[:20])  # imports and regex compilation
    times, cpu, rewards = [], [], []
    for _ in range(2):
        started, cpu_started = time.perf_counter(), time.process_time()
        rewards = math_verify_direct(workload)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return rewards, len(workload) / min(times), min(cpu)


def test_math_verify_direct(benchmark, workload, direct_rewards_and_rate):
    benchmark.pedantic(math_verify_direct, args=(workload,), rounds=2, iterations=1)
    benchmark.extra_info["pairs"] = len(workload)
    benchmark.extra_info["answers_per_s"] = round(len(workload) / benchmark.stats.stats.median, 1)


def _bench_verifier(benchmark, workload, direct_rewards_and_rate, **options) -> None:
    direct_rewards, direct_rate, direct_cpu_s = direct_rewards_and_rate
    with MathVerifier(workers=2, **options) as verifier:
        verifier.start()
        verifier.score_many(workload)  # warm-up, as the baseline's process is warm too

        def forget():
            verifier.clear_cache()  # no verdict, parsed answer or verify result survives a round
            return (workload,), {}

        verdicts = benchmark.pedantic(verifier.score_many, setup=forget, rounds=ROUNDS, iterations=1)
        # CPU seconds, which a busy shared machine distorts less than wall time.
        forget()
        parent_cpu, workers_cpu = time.process_time(), _children_cpu_s()
        verifier.score_many(workload)
        parent_cpu, workers_cpu = time.process_time() - parent_cpu, _children_cpu_s() - workers_cpu
    rewards = [v.reward for v in verdicts]
    rate = len(workload) / benchmark.stats.stats.median
    agreement = sum(a == b for a, b in zip(rewards, direct_rewards, strict=True)) / len(rewards)
    benchmark.extra_info.update(
        pairs=len(workload),
        answers_per_s=round(rate, 1),
        math_verify_direct_answers_per_s=round(direct_rate, 1),
        speedup_vs_math_verify=round(rate / direct_rate, 2),
        reward_agreement_with_direct=round(agreement, 4),
        mean_reward=round(statistics.fmean(rewards), 3),
        via={via: sum(v.via == via for v in verdicts) for via in ("integer", "prefilter", "math_verify")},
        cpu_s_parent=round(parent_cpu, 3),
        cpu_s_workers=round(workers_cpu, 3),
        cpu_s_math_verify_direct=round(direct_cpu_s, 3),
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    # Speed is worthless if the verdicts drift from math-verify's.
    assert agreement >= 0.98


def test_math_verifier_pool(benchmark, workload, direct_rewards_and_rate):
    _bench_verifier(benchmark, workload, direct_rewards_and_rate)
    benchmark.extra_info["target_speedup"] = 5.0


def test_math_verifier_pool_without_integer_fast_path(benchmark, workload, direct_rewards_and_rate):
    """Every pair sent to math-verify: what the pool, extraction and dedup give on their own."""
    _bench_verifier(benchmark, workload, direct_rewards_and_rate, integer_fast_path=False)


def test_math_verifier_pool_one_answer_per_task(benchmark, workload, direct_rewards_and_rate):
    """Chunks of one: every answer is its own task (one pipe round trip each), what chunking saves."""
    _bench_verifier(benchmark, workload, direct_rewards_and_rate, chunk_size=1)
