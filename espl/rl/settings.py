"""Trainer settings as plain dataclasses (no torch import, so configs load fast)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: Sequence[str] = DEFAULT_TARGETS


@dataclass
class KLSettings:
    """The KL anchor: none, a frozen reference (K3), or EMA-PG's EMA anchor (top-k KL)."""

    kind: Literal["none", "k3", "topk"] = "none"
    coef: float = 0.001
    topk: int = 32
    form: Literal["corrected", "paper"] = "corrected"
    ema_eta: float = 0.9
    ema_period: int = 10
    """P: the anchor moves after every P-th optimizer step, or P-th batch (`ema_period_unit`).
    A batch whose groups were all dropped takes no step and counts as neither, so no update
    falls due on it and none is lost."""
    ema_period_unit: Literal["step", "batch"] = "step"
    """What P counts: `step`, optimizer steps (several per batch with mini-batches or epochs);
    `batch`, batches that took at least one step, as EMA-PG's reference code does (it counts
    verl's `global_steps`, each of them 2 mini-batch optimizer steps in its search runs)."""
    anchor: Literal["factors", "exact"] = "factors"
    """How the EMA anchor averages a LoRA policy (`espl.rl.anchor`): `factors`, a second
    adapter holding EMA(A) and EMA(B) (cheap, but EMA(B)·EMA(A) != EMA(B·A)); `exact`, an
    fp32 EMA of every adapted layer's delta scale·B·A (4·out·in bytes per layer: 405 MiB for
    SmolLM2-135M, about 11 GB for a 3B model). Default `factors`: on real runs
    (benchmarks/test_rl_ema_gap.py) the two anchors' weights differed by 0.2-1% and the KL
    the loss sees by 0.2-1.2% at LoRA learning rates of 4e-5 to 1e-4, which does not pay for
    a full fp32 copy of every adapted matrix; at lr 1e-3 the gap reached 7% of the weights
    and 10% of the KL, and the EMA-PG preset (`ema_pg_search`) takes `exact` for fidelity."""


@dataclass
class TrainerConfig:
    loss: str = "reinforce"
    loss_options: dict[str, Any] = field(default_factory=dict)
    advantage_mode: str | None = None
    """None: the loss's own default (`espl` for reinforce and cispo, `grpo` for grpo ...)."""
    lr: float = 4e-5
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    """Global gradient-norm clip; 0 turns it off (E-SPL's reference clips nothing)."""
    micro_batch_size: int = 8
    mini_batches: int = 1
    """Optimizer steps per pass over a batch of rollouts: the kept sequences, shuffled (seeded
    by the run's seed and the batch), split into this many mini-batches of near-equal size.
    1 (E-SPL): one step on the whole batch."""
    epochs: int = 1
    """Passes over each batch of rollouts (PPO's update epochs); steps = epochs x mini_batches."""
    old_logprobs: Literal["engine", "recompute"] = "engine"
    """The denominator of the importance ratio (PPO clip, REINFORCE ratio, the top-k KL's `s`),
    fixed for every step on one batch. `engine`: the sampling logprobs the engine returned
    (Tinker's choice; the `hf` engine samples from the trainer's own weights, so they are the
    old policy up to kernel round-off). `recompute`: the trainer's logprobs under its weights
    before the batch's first step (verl's and TRL's `old_log_prob`), with the engine's
    logprobs kept for a truncated importance weight per token (`tis_cap`)."""
    tis_cap: float = 2.0
    """With `old_logprobs = "recompute"`: each token's policy term is weighted by
    min(pi_trainer_old / pi_engine, tis_cap), detached (truncated importance sampling, C = 2
    as in TRL's `vllm_importance_sampling_cap` and the TIS write-up)."""
    share_prefix: bool = True
    """Run each group's shared prompt once per micro-batch (same gradient, less compute).
    Under `gradient_checkpointing` only the passes without autograd (old logprobs) share it."""
    gradient_checkpointing: bool = False
    """Keep only each decoder layer's input for backward and run the layer again there
    (non-reentrant `torch.utils.checkpoint`): activation memory falls from every layer's
    intermediates to one [tokens, H] tensor per layer, for about one more forward pass of
    compute. Checkpointed layers run without a key/value cache, so the training passes then
    run each row's prompt with the row (exact, but the prompt's compute is no longer shared)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    kl: KLSettings = field(default_factory=KLSettings)
    bf16: bool = False
    """Autocast the forward to bfloat16 (master weights stay fp32)."""
    norm_tokens: int | None = None
    """Constant divisor of Dr. GRPO's aggregation (the generation budget). A run's plan fills
    it with `policy.max_tokens`; None (a trainer built by hand): the longest sequence of the
    batch, the same for every micro-batch and mini-batch of it."""
    temperature: float = 1.0
    """Sampling temperature: logprobs are of the tempered distribution the tokens came from."""
    fsdp: bool = False
    """Under `torchrun` (2 or more ranks): shard the frozen base model over the ranks with FSDP2
    (`espl.rl.sharding`), for a base that does not fit one GPU; the LoRA adapters stay whole on
    every rank. The policy then samples on an engine that holds its own weights (`vllm`,
    `fleet`), never on the sharded model (`hf`)."""
    keep_adapters: int = 3
    """Adapter folders published for engines that load them from disk (`v000123`, one per
    update) kept on disk: the newest this many; 0 keeps every one. A 7B rank-32 adapter is about
    a third of a GB, so 200 updates would otherwise fill tens of GB."""
