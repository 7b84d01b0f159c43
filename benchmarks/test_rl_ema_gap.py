"""How far EMA-PG's factor anchor is from the exact weight-space anchor, on a real run.

With LoRA the policy's weights are W + s·B·A. The exact EMA anchor is W + EMA(s·B·A)
(`rl.kl.anchor="exact"`); the cheap one keeps EMA(A) and EMA(B) as a second adapter and runs
W + s·EMA(B)·EMA(A) (`"factors"`), which differs by a covariance of the two factors over the
EMA's window. Here both anchors follow one real training run: `LoRATrainer` with `ema_pg`
(top-k KL k=32 against the exact anchor, eta 0.9, P counted in optimizer steps, 2 mini-batch
steps per batch) on rollouts the `hf` engine samples from the trainer's own model, on a task
with mixed rewards (a reply of even length, about half of them), and the factor anchor is
moved at exactly the same optimizer steps. After every batch that moved the anchors it
measures, on that batch's policy tokens:

- `weight_gap`: sqrt(sum_l ||D_exact,l - D_factors,l||^2) / sqrt(sum_l ||D_exact,l||^2), the
  relative difference of the anchors' weight deltas over every adapted layer;
- `kl_gap`: |KL(pi || factors) - KL(pi || exact)| / KL(pi || exact), full-vocabulary KLs
  averaged over tokens: how much the regulariser the loss sees changes;
- `kl_between`: KL(exact || factors) per token, against `kl_exact`, the policy's distance.

Cases: `tiny-random` (3M-parameter random Llama, SmolLM2 tokenizer) at lr 1e-3 and at E-SPL's
4e-5, and SmolLM2-135M-Instruct at 1e-4 (rank 16, a few minutes on 2 cores); LoRA on all seven
projections. `ESPL_BENCH_QUICK=1` runs fewer iterations. Each row's `extra_info` holds the
figures after the last anchor update and their maximum over the run.

    OMP_NUM_THREADS=1 .venv/bin/python -m pytest benchmarks/test_rl_ema_gap.py --benchmark-only -q -s

Last measured (2-core AMD EPYC, OMP_NUM_THREADS=1, about 9 minutes in all; final figures,
max over the run in brackets):

| case | steps / anchor updates | weight gap | KL gap |
|---|---|---|---|
| tiny-random, lr 1e-3, P 10 | 200 / 20 | 4.9% (7.0%) | 10.5% (10.7%) |
| tiny-random, lr 4e-5, P 10 | 200 / 20 | 0.20% (0.28%) | 0.24% (0.32%) |
| SmolLM2-135M, lr 1e-4, r16, P 2 | 24 / 12 | 0.97% (1.03%) | 0.38% (1.16%) |

The gap grows with how far the factors move (lr, steps): at the LoRA learning rates this
project trains with it stays near 1% of the anchor's weights and of the KL the loss sees,
while the exact anchor holds a full fp32 copy of every adapted matrix (405 MiB for
SmolLM2-135M's seven projections, against 540 MB for the whole fp32 model). So the default
is `rl.kl.anchor = "factors"`; `"exact"` is there for fidelity (the `ema_pg_search` preset)
and for large learning rates, where the factor anchor's KL was 10% off.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from benchmarks.workers.runtime import scale
from envs.base import Task, TextEnv

pytestmark = pytest.mark.slow


class EvenLengthEnv(TextEnv):
    """Reward 1 for a reply with an even number of characters: mixed outcomes for any model."""

    def __init__(self, split: str = "train", render_mode: str | None = None):
        tasks = [Task(f"t{i}", f"Write a short note about topic number {i}.", ("",)) for i in range(8)]
        super().__init__(tasks, split=split, render_mode=render_mode)

    def initial_messages(self, task: Task) -> list[dict[str, str]]:
        return [{"role": "user", "content": task.question}]

    def respond(self, action: str):
        return float(len(action.strip()) % 2 == 0), True, None, {}


@dataclass(frozen=True)
class Case:
    model: str
    lr: float
    rank: int
    iterations: int
    tasks: int
    samples: int
    max_tokens: int
    period: int


CASES = {
    "tiny-random-lr1e-3": Case("tiny-random", 1e-3, 32, scale(100, 20), 8, 6, 8, 10),
    "tiny-random-lr4e-5": Case("tiny-random", 4e-5, 32, scale(100, 20), 8, 6, 8, 10),
    "smollm2-135m-lr1e-4": Case("smollm2-135m", 1e-4, 16, scale(12, 4), 4, 4, 12, 2),
}
ETA, MINI_BATCHES, TOP_K = 0.9, 2, 32


class BothAnchors:
    """The trainer's exact anchor (the one its KL uses), with the factor anchor moved in step."""

    def __init__(self, exact: Any, factors: Any):
        self.exact, self.factors = exact, factors
        self.kind = exact.kind
        self.updates = 0

    def update(self, eta: float) -> None:
        self.exact.update(eta)
        self.factors.update(eta)
        self.updates += 1

    def active(self) -> Any:
        return self.exact.active()

    def state_dict(self) -> dict[str, Any]:
        return self.exact.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.exact.load_state_dict(state)


def weight_gap(anchors: BothAnchors) -> float:
    from espl.rl.lora import ANCHOR

    gap = size = 0.0
    for name, layer in anchors.exact.layers.items():
        exact = anchors.exact.deltas[name]
        gap += float((exact - layer.get_delta_weight(ANCHOR).float()).norm() ** 2)
        size += float(exact.norm() ** 2)
    return math.sqrt(gap / size) if size > 0 else 0.0


@torch.no_grad()
def kl_figures(trainer: Any, anchors: BothAnchors, trajectories: list[Any]) -> dict[str, float]:
    """Token-mean full-vocabulary KLs on the batch's policy tokens."""
    from espl.rl import batching
    from espl.rl.kl import exact_reverse_kl
    from espl.rl.logits import output_layer

    totals = {"kl_exact": 0.0, "kl_factors": 0.0, "kl_between": 0.0}
    tokens = 0
    head = output_layer(trainer.model)
    trainer.model.eval()
    for batch in batching.micro_batches(trajectories, [0.0] * len(trajectories), 16, pad_id=trainer.pad_id):
        policy = head(batching.masked_hidden(trainer.model, batch)).float()
        with anchors.exact.active():
            exact = head(batching.masked_hidden(trainer.model, batch)).float()
        with anchors.factors.active():
            factors = head(batching.masked_hidden(trainer.model, batch)).float()
        totals["kl_exact"] += float(exact_reverse_kl(policy, exact).sum())
        totals["kl_factors"] += float(exact_reverse_kl(policy, factors).sum())
        totals["kl_between"] += float(exact_reverse_kl(exact, factors).sum())
        tokens += policy.shape[0]
    out = {key: value / max(tokens, 1) for key, value in totals.items()}
    out["kl_gap"] = abs(out["kl_factors"] - out["kl_exact"]) / out["kl_exact"] if out["kl_exact"] > 0 else 0.0
    return out


def measure(case: Case) -> dict[str, Any]:
    from agents import models
    from agents.engine import SamplingParams
    from agents.engines.hf import HFEngine
    from agents.rollout import Episode, RolloutConfig, RolloutDriver
    from espl.rl.anchor import FactorAnchor
    from espl.rl.lora import attach_lora
    from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    torch.manual_seed(0)
    tokenizer = models.load_tokenizer(case.model)
    lora = LoraSettings(rank=case.rank, alpha=2 * case.rank)
    kl = KLSettings(kind="topk", topk=TOP_K, ema_eta=ETA, ema_period=case.period, anchor="exact")
    config = TrainerConfig(loss="ema_pg", lr=case.lr, lora=lora, kl=kl, mini_batches=MINI_BATCHES, micro_batch_size=16)
    trainer = LoRATrainer(models.load_model(case.model), config, pad_id=tokenizer.pad_token_id or 0, seed=0)
    attach_lora(trainer.model, lora, with_anchor=True)  # the factor anchor, starting at the policy too
    anchors = BothAnchors(trainer.anchor, FactorAnchor(trainer.model))
    trainer.anchor = anchors
    engine = HFEngine(trainer.model, tokenizer=tokenizer, max_batch_size=64)
    sampling = SamplingParams(temperature=1.0, max_tokens=case.max_tokens)
    driver = RolloutDriver(engine, EvenLengthEnv, RolloutConfig(sampling=sampling))
    tasks = driver.envs(1)[0].tasks[: case.tasks]
    history: list[dict[str, float]] = []
    rewards: list[float] = []
    started = time.perf_counter()
    for step in range(case.iterations):
        episodes = [Episode(task, None, "p0", s) for task in tasks for s in range(case.samples)]
        trajectories = driver.run(episodes, trainer.adapter(), seed=step)
        rewards.append(sum(t.reward for t in trajectories) / len(trajectories))
        before = anchors.updates
        trainer.step(trajectories, [(t.prompt_id, t.task_id) for t in trajectories])
        if anchors.updates > before:
            history.append({"optimizer_step": float(trainer.optimizer_steps), "weight_gap": weight_gap(anchors),
                            **kl_figures(trainer, anchors, trajectories)})
    assert history, "no anchor update happened: run more iterations"
    last = history[-1]
    return {
        "model": case.model, "lr": case.lr, "rank": case.rank, "iterations": case.iterations, "period": case.period,
        "optimizer_steps": trainer.optimizer_steps, "anchor_updates": anchors.updates,
        "exact_anchor_mib": anchors.exact.nbytes() / 2**20,
        "reward_first_10": sum(rewards[:10]) / len(rewards[:10]), "reward_last_10": sum(rewards[-10:]) / len(rewards[-10:]),
        **{f"final_{key}": value for key, value in last.items() if key != "optimizer_step"},
        "max_weight_gap": max(h["weight_gap"] for h in history), "max_kl_gap": max(h["kl_gap"] for h in history),
        "history": history, "seconds": time.perf_counter() - started,
    }


@pytest.mark.parametrize("name", list(CASES))
def test_factor_anchor_against_exact_anchor(benchmark: Any, machine_load: None, name: str) -> None:
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(measure(CASES[name]))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update({k: v for k, v in result.items() if k != "history"})
    benchmark.extra_info["history"] = result["history"]
    print(f"\n{name}: after {result['anchor_updates']} anchor updates ({result['optimizer_steps']} optimizer steps), "
          f"weight gap {result['final_weight_gap']:.2%} (max {result['max_weight_gap']:.2%}), "
          f"KL(pi||exact) {result['final_kl_exact']:.3e} vs KL(pi||factors) {result['final_kl_factors']:.3e}: "
          f"kl gap {result['final_kl_gap']:.2%} (max {result['max_kl_gap']:.2%}), "
          f"KL(exact||factors) {result['final_kl_between']:.3e}; exact anchor {result['exact_anchor_mib']:.1f} MiB; "
          f"reward {result['reward_first_10']:.2f} -> {result['reward_last_10']:.2f}; {result['seconds']:.0f} s")
