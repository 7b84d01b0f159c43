"""One RL iteration (rollout + update) of our stack against TRL 1.16's `GRPOTrainer`.

Same model (SmolLM2-135M-Instruct, fp32, CPU), LoRA r8 on every projection, GRPO without KL,
8 GSM8K questions x 4 samples x 64 new tokens, the same learning rate and the same reward path
(`benchmarks/workers/workload.py`). Each side runs in its own worker process, so each peak RSS
is that side's alone; both are loaded first, then steps alternate TRL / ours, so a change of
machine load hits both sides alike. One warm-up step each, then K timed steps (3; 1 with
`ESPL_BENCH_QUICK=1`, which also halves the prompts and the tokens). The benchmark fixture times our steps; TRL's steps (timed the same way,
as round trips to its worker) and the ratios go to `extra_info`.

    .venv/bin/python -m pytest benchmarks/test_rl_vs_trl.py --benchmark-only -q -s

`ESPL_BENCH_TRL_GRADIENT_CHECKPOINTING=1` turns on TRL's default gradient checkpointing (less
activation memory, one more forward per micro-batch); off by default because ours does not
checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from statistics import mean
from typing import Any

import pytest

from benchmarks.peers import require
from benchmarks.workers.client import StepWorker
from benchmarks.workers.runtime import scale
from benchmarks.workers.workload import current_workload

pytestmark = pytest.mark.slow

TIMED_STEPS = scale(3, 1)
WARMUP_STEPS = 1
TRL_CHECKPOINTING = os.environ.get("ESPL_BENCH_TRL_GRADIENT_CHECKPOINTING", "0") not in ("", "0")


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, StepWorker]]:
    require("trl")
    args = ["--steps", str(WARMUP_STEPS + TIMED_STEPS)] + (["--gradient-checkpointing"] if TRL_CHECKPOINTING else [])
    with StepWorker("rl_step_trl.py", *args) as trl, StepWorker("rl_step_ours.py") as ours:
        yield {"trl": trl, "ours": ours}


def test_rl_iteration_vs_trl(benchmark: Any, machine_load: None, workers: dict[str, StepWorker]) -> None:
    ours, trl = workers["ours"], workers["trl"]
    benchmark.pedantic(ours.step, setup=lambda: (trl.step(), None)[1], rounds=TIMED_STEPS,
                       warmup_rounds=WARMUP_STEPS, iterations=1)
    ours_final, trl_final = ours.stop(), trl.stop()

    ours_steps, trl_steps = ours.steps[WARMUP_STEPS:], trl.steps[WARMUP_STEPS:]
    assert len(ours_steps) == len(trl_steps) == TIMED_STEPS
    for report in ours.steps:
        assert report["errors"] == 0 and report["completion_tokens"] > 0
        assert 0.0 <= report["reward_mean"] <= 1.0
    for report in trl.steps:
        assert report["completion_tokens"] > 0 and 0.0 <= report["reward_mean"] <= 1.0
    ours_s, trl_s = mean(r["wall_s"] for r in ours_steps), mean(r["wall_s"] for r in trl_steps)
    ours_gib, trl_gib = ours_final["peak_rss_gib"], trl_final["peak_rss_gib"]
    benchmark.extra_info.update(
        workload=current_workload().to_dict(),
        timed_steps=TIMED_STEPS,
        trl_gradient_checkpointing=TRL_CHECKPOINTING,
        ours_s_per_step=round(ours_s, 2),
        trl_s_per_step=round(trl_s, 2),
        ratio=round(ours_s / trl_s, 3),
        ours_rollout_s=round(mean(r["rollout_s"] for r in ours_steps), 2),
        ours_update_s=round(mean(r["update_s"] for r in ours_steps), 2),
        ours_completion_tokens=[r["completion_tokens"] for r in ours_steps],
        trl_completion_tokens=[r["completion_tokens"] for r in trl_steps],
        ours_peak_rss_gib=round(ours_gib, 2),
        trl_peak_rss_gib=round(trl_gib, 2),
        memory_ratio=round(ours_gib / trl_gib, 3),
        ours_load_s=ours.ready["load_s"],
        trl_load_s=trl.ready["load_s"],
        worker_torch_threads=[ours.ready["torch_threads"], trl.ready["torch_threads"]],
    )
    print("\nRL iteration vs TRL:", {k: v for k, v in benchmark.extra_info.items() if k != "workload"})
