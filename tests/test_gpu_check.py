"""The GPU device check (benchmarks/gpu/check.sh) runs end to end on the CPU (`--dry-run`) with
only what the GPU machine has: torch, transformers, peft and this repository. Every other
dependency of the project is made unimportable, as it is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu.bound import bound_tokens_per_s, step_bytes
from benchmarks.gpu.random_model import build_model, load_config

ROOT = Path(__file__).resolve().parent.parent

ABSENT_ON_THE_GPU_MACHINE = ("vllm", "xgrammar", "msgspec", "gymnasium", "httpx", "rich", "math_verify",
                             "trueskill", "bm25s")

BLOCKER = f"""
import sys
# None in sys.modules: `import name` raises ModuleNotFoundError and find_spec(name) is None,
# as for a package that is not installed.
for name in {ABSENT_ON_THE_GPU_MACHINE!r}:
    sys.modules[name] = None
"""


def without_project_extras(tmp_path: Path) -> dict[str, str]:
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ESPL_BENCH_REQUIRE_PEERS")}
    return {**env, "PYTHONPATH": str(blocker), "PYTHON": sys.executable}


@pytest.mark.slow
def test_the_dry_run_finishes_with_only_torch_transformers_and_peft(tmp_path: Path) -> None:
    env = without_project_extras(tmp_path)
    probe = subprocess.run([sys.executable, "-c", "import gymnasium"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, "the blocker blocks"

    done = subprocess.run([str(ROOT / "benchmarks" / "gpu" / "check.sh"), "--dry-run", "--bandwidth-gbs", "30"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, "one summary line on stdout; progress goes to stderr"
    summary = json.loads(lines[0])

    assert summary["ok"] is True and summary["errors"] == [] and summary["dry_run"] is True
    assert summary["device"].startswith("cpu") and summary["torch"] == torch.__version__
    assert summary["transformers"] and summary["peft"]
    model = summary["model"]
    assert model["model_type"] == "qwen2" and model["rope_theta"] == 1e6 and model["tie_word_embeddings"] is False
    assert model["dtype"] == "float32"

    train = summary["train"]
    assert train["lora_rank"] == 32 and len(train["lora_targets"]) == 7 and train["lora_dtypes"] == ["float32"]
    assert train["gradient_checkpointing_requested"] is True
    assert train["sequences"] == 4 and train["step_s"] > 0 and train["stats"]["sequences"] == 4
    assert train["peak_memory_gib"] is None and train["peak_rss_gib"] > 0  # no device memory on the CPU

    for label, with_lora in (("decode", True), ("decode_base", False)):
        decode = summary[label]
        assert decode["adapter"] == ("policy" if with_lora else None)
        assert decode["tokens_per_s"] > 0 and decode["tokens"][1] > decode["tokens"][0]
        bound = decode["bound"]
        assert "bandwidth" in bound["formula"] and bound["bandwidth_gbs"] == 30
        assert (bound["lora_bytes"] > 0) is with_lora
        assert bound["bytes_per_step"] == bound["weight_bytes"] + bound["lora_bytes"] + bound["kv_bytes"]
        assert bound["bound_tokens_per_s"] == pytest.approx(decode["batch"] * 30e9 / bound["bytes_per_step"], rel=1e-3)
        fraction = decode["tokens_per_s"] / bound["bound_tokens_per_s"]
        assert bound["fraction_of_bound"] == pytest.approx(fraction, abs=1e-3)
    assert summary["tokens_per_s"] == summary["decode"]["tokens_per_s"]
    assert summary["step_s"] == train["step_s"] and summary["wall_s"] > 0


@pytest.mark.slow
def test_the_shipped_config_is_qwen2_5_7b() -> None:
    """7.62B parameters, the published size, counted on the meta device (nothing allocated)."""
    config = load_config(dry_run=False)
    model = build_model(config, device=torch.device("meta"), dtype=torch.bfloat16)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(7.62e9, rel=2e-3)
    assert config.hidden_size // config.num_attention_heads == 128 and config.num_key_value_heads == 4


def test_the_bound_counts_each_weight_once_and_the_cache_at_its_context() -> None:
    config = load_config(dry_run=True)
    model = build_model(config, device=torch.device("cpu"), dtype=torch.float32)
    step = step_bytes(model, batch=8, mean_context=100, with_lora=False)
    everything = sum(p.numel() for p in model.parameters()) * 4
    assert step.weight_bytes == everything - config.vocab_size * config.hidden_size * 4  # the embedding is gathered
    head_dim = config.hidden_size // config.num_attention_heads
    assert step.kv_bytes == 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4 * 8 * 100
    assert step.lora_bytes == 0
    assert bound_tokens_per_s(step, batch=8, bandwidth_gbs=1.0) == pytest.approx(8e9 / step.total)
