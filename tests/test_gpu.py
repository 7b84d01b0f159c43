"""The GPU tier (`-m gpu`, run by `make test` where `nvidia-smi -L` lists a GPU): the trainer and
the `hf` engine on CUDA with the tiny random model, bf16 base weights under fp32 LoRA factors.

Skipped, saying why, where torch sees no CUDA device (a CPU build of torch, or no driver).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from agents import models
from agents.engine import SamplingParams
from agents.engines.hf import HFEngine
from agents.trajectory import Trajectory
from espl.rl.settings import LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason=f"needs a CUDA GPU: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none"),
]

PROMPTS = [
    [{"role": "user", "content": "What is 17 times 3?"}],
    [{"role": "user", "content": "Name a prime number above 50."}],
]
SAMPLES = 4


def sample_and_train(device: str) -> dict[str, Any]:
    """One rollout of the live adapter, one trainer step on it, one rollout after: what the
    loop does each iteration, on `device` with a bf16 base."""
    model = models.load_model("tiny-random", dtype="bfloat16", device=device)
    tokenizer = models.load_tokenizer("tiny-random")
    trainer = LoRATrainer(model, TrainerConfig(bf16=True, lora=LoraSettings(rank=8, alpha=16)),
                          pad_id=tokenizer.pad_token_id, seed=0)
    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=8)
    params = SamplingParams(max_tokens=16, n=SAMPLES, seed=0)
    completions = engine.generate(PROMPTS, params, engine.adapter_from(trainer))

    trajectories, keys = [], []
    for p, (prompt, samples) in enumerate(zip(PROMPTS, completions)):
        for s, completion in enumerate(samples):
            assert completion.ok, completion.error
            trajectory = Trajectory(env_id="gpu", task_id=str(p), sample_index=s, reward=float(s % 2 == 0))
            trajectory.append_prompt(engine.prompt_ids(prompt))
            trajectory.append_sampled(completion.token_ids, completion.logprobs)
            trajectories.append(trajectory)
            keys.append(p)
    before = {id(p): p.detach().clone() for p in trainer.parameters}
    stats = trainer.step(trajectories, keys)
    after = engine.generate(PROMPTS, params, engine.adapter_from(trainer))
    return {"trainer": trainer, "completions": completions, "stats": stats, "before": before, "after": after}


@pytest.fixture(scope="module")
def run() -> dict[str, Any]:
    return sample_and_train("cuda")


def test_the_base_is_bf16_and_the_lora_factors_fp32_all_on_the_gpu(run: dict[str, Any]) -> None:
    trainer = run["trainer"]
    lora = {id(p) for p in trainer.parameters}
    base = [p for p in trainer.model.parameters() if id(p) not in lora]
    assert lora and base
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert {p.dtype for p in base} == {torch.bfloat16}
    assert {p.dtype for p in trainer.parameters} == {torch.float32}
    assert all(p.requires_grad for p in trainer.parameters) and not any(p.requires_grad for p in base)
    for p in trainer.parameters:  # Adam's moments follow their parameter: fp32, on the GPU
        state = trainer.optimizer.state[p]
        assert state["exp_avg"].dtype == torch.float32 and state["exp_avg"].device.type == "cuda"


def test_a_step_on_sampled_tokens_moves_the_adapter(run: dict[str, Any]) -> None:
    stats, trainer = run["stats"], run["trainer"]
    assert stats["sequences"] == len(PROMPTS) * SAMPLES
    assert math.isfinite(stats["loss"]) and stats["grad_norm"] > 0
    # The engine sampled from the trainer's own weights: the ratio is 1 up to bf16 round-off.
    assert 0.8 < stats["ratio_mean"] < 1.25
    moved = [not torch.equal(run["before"][id(p)], p.detach()) for p in trainer.parameters]
    assert any(moved)


def test_the_engine_samples_on_the_gpu_before_and_after_the_step(run: dict[str, Any]) -> None:
    vocabulary = run["trainer"].model.get_input_embeddings().num_embeddings
    for completions in (run["completions"], run["after"]):
        assert [len(samples) for samples in completions] == [SAMPLES] * len(PROMPTS)
        for completion in (c for samples in completions for c in samples):
            assert completion.ok and completion.token_ids
            assert all(0 <= t < vocabulary for t in completion.token_ids)
            assert all(math.isfinite(x) and x <= 0 for x in completion.logprobs)
