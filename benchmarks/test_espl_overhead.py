"""Per-iteration cost of E-SPL against plain RL on the same batch.

Both methods run `espl.run.train.run_training` with one configuration (GSM8K train split,
SmolLM2-135M on the `hf` engine, M=2 prompts x B problems x N samples, LoRA r8, 2 iterations,
no evaluation), so each iteration samples the same number of rollouts and takes one RL step;
`espl` additionally plays a TrueSkill match and mutates (sometimes crosses) prompts with the
reflector, which by default is the policy's own engine with the adapter off. Figures come
from the run dirs' `metrics.jsonl`: iteration wall time (the difference of the cumulative
`wall_s`), its `timings` split, and the `budget`'s reflector counters.

Mutation only reflects on problems with mixed outcomes (the published rule). With a 135M
model most GSM8K problems fail on every sample, so many iterations have nothing to reflect
on and cost no more than RL; the `reflect_on_failures` case turns on
`evolution.reflect_on_failures`, which reflects on failed rollouts when no problem is mixed,
and so measures the reflector's cost on every iteration. Each case reports how many
iterations actually reflected. The same starvation hits RL: a batch where every sample of
every group has the same reward gives GRPO-style advantages of zero, and the update is
skipped (`*_updates_skipped`). `ESPL_BENCH_ENV=arithmetic` swaps GSM8K for the arithmetic
env, where the 135M model gets mixed outcomes, so both the update and the published
mutation rule do real work. Rounds run rl then espl back to back (the fixture times espl).

Full: B=4, N=8 (64 rollouts per iteration), 64 new tokens, 2 rounds. `ESPL_BENCH_QUICK=1`:
B=2, N=4, 32 new tokens, 1 round.

    .venv/bin/python -m pytest benchmarks/test_espl_overhead.py --benchmark-only -q -s
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

from benchmarks.workers.runtime import scale

pytestmark = pytest.mark.slow

ITERATIONS = 2
ENV = os.environ.get("ESPL_BENCH_ENV", "gsm8k")
ROUNDS = scale(2, 1)


def run_config(method: str, reflect_on_failures: bool) -> Any:
    from espl.config import load_config

    return load_config(base={
        "method": method,
        "seed": 0,
        "iterations": ITERATIONS,
        "problems_per_iteration": scale(4, 2),
        "samples_per_problem": scale(8, 4),
        "eval_every": 0,
        "env": {"name": ENV},
        "policy": {"model": "smollm2-135m", "engine": "hf", "max_tokens": scale(64, 32), "max_total_tokens": 1024},
        "evolution": {"prompts_per_iteration": 2, "reflect_on_failures": reflect_on_failures},
        "rl": {"lr": 1e-4, "micro_batch_size": 8, "lora": {"rank": 8, "alpha": 16}},
    })


def train(method: str, reflect_on_failures: bool) -> list[dict[str, Any]]:
    """Run the method in a fresh run dir; the per-iteration metric records."""
    from espl.run.run_dir import METRICS, RunDir
    from espl.run.train import run_training

    with tempfile.TemporaryDirectory(prefix=f"bench-{method}-") as path:
        run_dir = RunDir(Path(path) / "run")
        run_training(run_config(method, reflect_on_failures), run_dir)
        records = [r for r in run_dir.read(METRICS) if r.get("iteration", 0) > 0 and "timings" in r]
    assert [r["iteration"] for r in records] == list(range(1, ITERATIONS + 1))
    return records


def per_iteration(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each iteration's own wall time and reflector spend (the records hold running totals)."""
    rows, wall, tokens, calls = [], 0.0, 0, 0
    for record in records:
        budget = record["budget"]
        mutation = record.get("evolution", {}).get("mutation", {})
        rows.append({
            "wall_s": record["wall_s"] - wall,
            **{key: value for key, value in record["timings"].items()},
            "rollouts": record["rollouts"],
            "train_reward": record["train_reward"],
            "generated_tokens": record["generated_tokens"],
            "reflector_calls": budget["reflector_calls"] - calls,
            "reflector_tokens": budget["reflector_completion_tokens"] - tokens,
            "update_skipped": bool(record.get("train", {}).get("skipped")),
            "reflected": mutation.get("usage", {}).get("calls", 0) > 0,
            "child": mutation.get("child"),
            "reason": mutation.get("reason"),
        })
        wall, tokens, calls = record["wall_s"], budget["reflector_completion_tokens"], budget["reflector_calls"]
    return rows


@pytest.fixture(scope="module")
def warm() -> None:
    """Start the verifier pool and touch the model once, so the first timed run pays no start-up."""
    from agents.engine import SamplingParams
    from agents.engines.hf import HFEngine
    from envs.math.verify import default_verifier

    default_verifier().start()
    HFEngine("smollm2-135m").generate([[{"role": "user", "content": "2+2?"}]], SamplingParams(max_tokens=4))


@pytest.mark.parametrize("reflect_on_failures", [False, True], ids=["published", "reflect_on_failures"])
def test_espl_iteration_vs_rl(benchmark: Any, machine_load: None, warm: None, reflect_on_failures: bool) -> None:
    runs: dict[str, list[list[dict[str, Any]]]] = {"rl": [], "espl": []}
    benchmark.pedantic(
        lambda: runs["espl"].append(per_iteration(train("espl", reflect_on_failures))),
        setup=lambda: (runs["rl"].append(per_iteration(train("rl", reflect_on_failures))), None)[1],
        rounds=ROUNDS, warmup_rounds=0, iterations=1,
    )
    rl_rows = [row for run in runs["rl"] for row in run]
    espl_rows = [row for run in runs["espl"] for row in run]
    assert len(rl_rows) == len(espl_rows) == ROUNDS * ITERATIONS
    assert all(row["reflector_calls"] == 0 for row in rl_rows)  # rl never reflects
    # Same batch: every iteration samples M x B x N rollouts under either method.
    assert [r["rollouts"] for r in rl_rows] == [r["rollouts"] for r in espl_rows]
    assert all(r["generated_tokens"] > 0 for r in rl_rows + espl_rows)
    reflected = [row for row in espl_rows if row["reflected"]]
    if reflect_on_failures:
        assert reflected, "with reflect_on_failures an all-failed batch is reflected on"
    for row in espl_rows:
        assert row["reflected"] == (row["reflector_calls"] > 0)
    rl_wall, espl_wall = mean(r["wall_s"] for r in rl_rows), mean(r["wall_s"] for r in espl_rows)

    def component(rows: list[dict[str, Any]], key: str) -> float:
        return round(mean(r.get(key, 0.0) for r in rows), 2)

    benchmark.extra_info.update(
        env=ENV,
        reflect_on_failures=reflect_on_failures,
        iterations=len(espl_rows),
        rl_iteration_s=round(rl_wall, 2),
        espl_iteration_s=round(espl_wall, 2),
        ratio=round(espl_wall / rl_wall, 3),
        iterations_reflected=len(reflected),
        reflector_calls_per_iteration=round(mean(r["reflector_calls"] for r in espl_rows), 1),
        reflector_tokens_per_iteration=round(mean(r["reflector_tokens"] for r in espl_rows), 1),
        reflector_tokens_per_reflecting_iteration=round(mean(r["reflector_tokens"] for r in reflected), 1) if reflected else 0,
        rollout_tokens_per_iteration=round(mean(r["generated_tokens"] for r in espl_rows), 1),
        rl_rollout_s=component(rl_rows, "rollout_s"), espl_rollout_s=component(espl_rows, "rollout_s"),
        rl_update_s=component(rl_rows, "update_s"), espl_update_s=component(espl_rows, "update_s"),
        espl_evolve_s=component(espl_rows, "evolve_s"),
        rl_updates_skipped=sum(r["update_skipped"] for r in rl_rows),
        espl_updates_skipped=sum(r["update_skipped"] for r in espl_rows),
        train_reward=[round(r["train_reward"], 3) for r in espl_rows],
        children=[r["child"] for r in espl_rows],
        no_child_reasons=[r["reason"] for r in espl_rows if r["child"] is None],
    )
    print(f"\nE-SPL vs RL (reflect_on_failures={reflect_on_failures}):", benchmark.extra_info)
