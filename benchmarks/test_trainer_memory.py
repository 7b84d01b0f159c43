"""Trainer memory against the number of policy tokens, at a 152k-token vocabulary.

One LoRA trainer step (`reinforce`, all sequences in one micro-batch, one shared prompt) on a
tiny Llama (hidden 64, 2 layers) with Qwen2.5's 152,064-token vocabulary, built from a config
with random weights: 1, 2 and 4 sequences of 2,048 policy tokens after a 64-token prompt, so
2k, 4k and 8k policy tokens. Each step runs in a fresh process
(`benchmarks/workers/trainer_memory.py`) and the figure is its peak RSS during the step minus
the RSS just before it. With so small a model nearly all of it is logits: kept for backward,
they would cost 152,064 x 4 bytes = 608 KB per token; computed a chunk at a time and
recomputed in backward (`espl.rl.logits`) they cost a fixed chunk x vocabulary, and the
growth from 2k to 8k tokens is the activations alone. The assertion: that growth is under a
tenth of what kept logits would add (6,144 x 608 KB = 3.7 GB). Cases: no KL, and EMA-PG's
top-k KL (policy and anchor logits), and no KL with `rl.gradient_checkpointing` (the
activations then shrink too: each layer keeps only its input).

`ESPL_BENCH_BASELINE_SOURCE=DIR` also measures the cases without checkpointing on another
checkout of the project (older code), side by side in `extra_info` (`baseline_*`); not
asserted.

    .venv/bin/python -m pytest benchmarks/test_trainer_memory.py --benchmark-only -q -s
    ESPL_BENCH_BASELINE_SOURCE=../main .venv/bin/python -m pytest benchmarks/test_trainer_memory.py \\
        --benchmark-only -q -s -k "none and not checkpointed"

Figures (2-core Intel Xeon with AMX): 5.04 / 5.16 / 5.31 GB at 2k / 4k / 8k tokens without a
KL, against 5.04 / 6.40 / 9.04 GB with the logits kept; the rest in benchmarks/README.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.workers.runtime import QUICK

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "benchmarks" / "workers" / "trainer_memory.py"
VOCAB = 152_064
SEQUENCES = (1, 2) if QUICK else (1, 2, 4)
"""Sequences of 2,048 policy tokens per step."""


def measure(sequences: int, kl: str, checkpointing: bool, source: Path = ROOT) -> dict[str, Any]:
    """One step in a fresh process: its policy tokens and peak RSS growth."""
    env = {**os.environ, "PYTHONPATH": ""}  # the worker puts `source` first on the import path itself
    flags = ["--gradient-checkpointing"] if checkpointing else []
    completed = subprocess.run(
        [sys.executable, str(WORKER), "--sequences", str(sequences), "--kl", kl, "--source", str(source), *flags],
        capture_output=True, text=True, env=env, timeout=1800, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the memory worker failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("kl", "checkpointing"), [("none", False), ("topk", False), ("none", True)],
                         ids=["none", "topk", "none-checkpointed"])
def test_trainer_memory_grows_with_activations_not_logits(
    benchmark: Any, machine_load: None, kl: str, checkpointing: bool
) -> None:
    figures: list[dict[str, Any]] = []

    def run() -> None:
        figures.clear()
        figures.extend(measure(n, kl, checkpointing) for n in SEQUENCES)

    benchmark.pedantic(run, rounds=1, iterations=1)
    growth = {f["policy_tokens"]: f["step_peak_growth_bytes"] for f in figures}
    tokens = sorted(growth)
    extra = benchmark.extra_info
    extra["kl"] = kl
    extra["gradient_checkpointing"] = checkpointing
    extra["peak_growth_gb"] = {str(t): round(growth[t] / 1e9, 3) for t in tokens}
    extra["update_s"] = {str(f["policy_tokens"]): round(f["update_s"], 1) for f in figures}
    added_tokens = tokens[-1] - tokens[0]
    kept_logits = added_tokens * VOCAB * 4
    extra["growth_gb"] = round((growth[tokens[-1]] - growth[tokens[0]]) / 1e9, 3)
    extra["kept_logits_would_add_gb"] = round(kept_logits / 1e9, 3)
    baseline = os.environ.get("ESPL_BENCH_BASELINE_SOURCE")
    if baseline and not checkpointing:  # older code may not know the setting
        old = [measure(n, kl, checkpointing, Path(baseline).resolve()) for n in SEQUENCES]
        extra["baseline_source"] = baseline
        extra["baseline_peak_growth_gb"] = {str(f["policy_tokens"]): round(f["step_peak_growth_bytes"] / 1e9, 3)
                                            for f in old}
    print(json.dumps(extra))
    assert growth[tokens[-1]] - growth[tokens[0]] < kept_logits / 10, extra
