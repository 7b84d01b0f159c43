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
    micro_batch_size: int = 8
    share_prefix: bool = True
    """Run each group's shared prompt once per micro-batch (same gradient, less compute)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    kl: KLSettings = field(default_factory=KLSettings)
    bf16: bool = False
    """Autocast the forward to bfloat16 (master weights stay fp32)."""
    norm_tokens: int | None = None
    """Constant divisor of Dr. GRPO's aggregation (the generation budget); None: the longest
    sequence of the step, the same for every micro-batch."""
    temperature: float = 1.0
    """Sampling temperature: logprobs are of the tempered distribution the tokens came from."""

