"""Policy-gradient losses of the GRPO family, selected by name (`--rl.loss`).

Every loss maps the same `LossInputs` to a scalar loss and a dict of detached statistics:

- `logprobs` [B, T]: the current policy's logprobs of the sampled tokens (requires grad).
- `old_logprobs` [B, T]: the sampling policy's logprobs of the same tokens (from the engine).
  The importance ratio is `ratio = exp(logprobs - sg(old_logprobs))`.
- `advantages` [B] (one per sequence, broadcast over its tokens) or [B, T].
- `mask` [B, T]: true (nonzero) on policy tokens only; prompt, padding and environment text
  are false and may hold any value, even inf or nan.
- `kl` [B, T], optional: a per-token KL term (from `espl.rl.kl`) that carries its own
  gradient; it is aggregated like the policy term and added as `kl_coef * aggregate(kl)`.
- `weights` [B, T], optional: a detached per-token weight on the policy term (not on the KL):
  the trainer's truncated importance weight min(pi_old / pi_engine, C) when the old logprobs
  are recomputed by the trainer (`TrainerConfig.old_logprobs = "recompute"`).

Losses (per-token terms before aggregation; A the advantage, eps_lo / eps_hi the clip range):

| name        | per-token term                                      | default aggregation       |
|-------------|-----------------------------------------------------|---------------------------|
| `reinforce` | `-A * min(ratio, ratio_cap)` (truncated IS)         | `token_sum`               |
| `grpo`      | `-min(ratio A, clip(ratio, 1-eps_lo, 1+eps_hi) A)`  | `seq_mean_token_mean`     |
| `dr_grpo`   | same as `grpo`                                      | `seq_mean_token_sum_norm` |
| `cispo`     | `-sg(clip(ratio, r_min, r_max)) * A * logprobs`     | `token_sum`               |
| `ema_pg`    | same as `grpo`, plus `kl_coef * KL` (required)      | `token_mean`              |

`reinforce` is E-SPL's loss: on policy (`old_logprobs == logprobs`) its gradient is exactly
REINFORCE's `-A grad logprobs`, and slightly off policy (engine and trainer numerics differ)
the ratio corrects for it. The ratio is truncated at `ratio_cap` (2, as TIS does), so a token
the engine found far less likely than the trainer does cannot dominate the step; today's
near-1 ratios are far below it and compute bit for bit as the untruncated form. `cispo` sums
over tokens as Tinker's `cispo` loss does (`-(sg(clip(ratio)) * logprobs * A).sum()`), the
hosted API E-SPL's reference code trained on. See `espl.rl.aggregation` for what each
aggregation means.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from espl.rl.advantages import ADVANTAGE_MODES
from espl.plugins import load_plugins
from espl.rl.aggregation import aggregate_tokens, check_aggregation, masked_values, token_mean

MAX_LOG_RATIO = 20.0
"""Log ratios are clamped to +-20 so one wild token cannot turn the loss into inf."""


@dataclass(frozen=True)
class LossInputs:
    """Everything a policy loss reads; shapes as in the module docstring."""

    logprobs: Tensor
    old_logprobs: Tensor
    advantages: Tensor
    mask: Tensor
    kl: Tensor | None = None
    weights: Tensor | None = None


@dataclass(frozen=True)
class LossOutput:
    loss: Tensor
    """Scalar to call `.backward()` on."""
    stats: dict[str, Tensor]
    """Detached 0-d tensors (call `.item()` when logging)."""


@runtime_checkable
class PolicyLoss(Protocol):
    """A named policy loss; `default_advantage_mode` is the advantage mode it is meant for."""

    name: ClassVar[str]
    default_advantage_mode: ClassVar[str]

    def __call__(self, inputs: LossInputs) -> LossOutput: ...


@dataclass(frozen=True)
class TokenTerms:
    """Per-token loss terms [B, T] plus loss-specific statistics."""

    per_token: Tensor
    stats: dict[str, Tensor]


@dataclass(frozen=True)
class PolicyLossBase(ABC):
    """Shared input checks, ratio, aggregation, KL term and statistics."""

    name: ClassVar[str] = ""
    default_advantage_mode: ClassVar[str] = "espl"
    requires_kl: ClassVar[bool] = False

    aggregation: str = "token_mean"
    kl_coef: float = 0.0
    max_tokens: int | None = None
    """Constant divisor of `seq_mean_token_sum_norm` (defaults to the padded length T)."""

    def __post_init__(self) -> None:
        check_aggregation(self.aggregation)
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {self.max_tokens}")

    @abstractmethod
    def token_terms(
        self, logprobs: Tensor, log_ratio: Tensor, advantages: Tensor, mask: Tensor
    ) -> TokenTerms:
        """Per-token terms; `log_ratio` is already masked (0 off-mask) and clamped."""

    def __call__(self, inputs: LossInputs) -> LossOutput:
        mask, advantages = _checked_mask_and_advantages(inputs)
        logprobs = masked_values(inputs.logprobs, mask)
        log_ratio = masked_values(inputs.logprobs - inputs.old_logprobs.detach(), mask)
        log_ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
        advantages = masked_values(advantages, mask)

        terms = self.token_terms(logprobs, log_ratio, advantages, mask)
        per_token = terms.per_token
        stats = dict(terms.stats)
        if inputs.weights is not None:
            if inputs.weights.shape != mask.shape:
                raise ValueError(f"weights {tuple(inputs.weights.shape)} must be [B, T] like the mask")
            weights = masked_values(inputs.weights.detach().to(per_token.dtype), mask)
            per_token = per_token * weights
            stats.update(_extremes("tis_weight", weights, mask))
        pg_loss = aggregate_tokens(per_token, mask, self.aggregation, max_tokens=self.max_tokens)
        loss = pg_loss
        if inputs.kl is not None:
            if inputs.kl.shape != mask.shape:
                raise ValueError(f"kl {tuple(inputs.kl.shape)} must be [B, T] like the mask")
            kl_loss = aggregate_tokens(
                inputs.kl, mask, self.aggregation, max_tokens=self.max_tokens
            )
            loss = loss + self.kl_coef * kl_loss
            stats["kl_loss"] = kl_loss.detach()
            stats["kl_mean"] = token_mean(inputs.kl.detach(), mask)
        elif self.requires_kl or self.kl_coef > 0:
            raise ValueError(f"loss {self.name!r} with kl_coef={self.kl_coef} needs `kl` [B, T]")

        with torch.no_grad():
            ratio = log_ratio.exp()
            stats.update(
                loss=loss.detach(),
                pg_loss=pg_loss.detach(),
                **_extremes("ratio", ratio, mask),
                # K3 estimate of KL(old || current) from tokens sampled by the old policy.
                approx_kl=token_mean(ratio - 1.0 - log_ratio, mask),
                advantage_mean=token_mean(advantages, mask),
                num_tokens=mask.sum(),
            )
        return LossOutput(loss=loss, stats=stats)


def _extremes(name: str, values: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """`{name}_mean`, `_max` and `_min` of `values` [B, T] over the unmasked tokens."""
    with torch.no_grad():
        big = torch.finfo(values.dtype).max
        return {
            f"{name}_mean": token_mean(values, mask),
            f"{name}_max": torch.where(mask, values, -big).max(),
            f"{name}_min": torch.where(mask, values, big).min(),
        }


def _checked_mask_and_advantages(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """Validate shapes; return the bool mask and advantages broadcast to [B, T]."""
    shape = inputs.logprobs.shape
    if inputs.logprobs.dim() != 2:
        raise ValueError(f"logprobs must be [B, T], got {tuple(shape)}")
    if inputs.old_logprobs.shape != shape or inputs.mask.shape != shape:
        raise ValueError(
            f"logprobs {tuple(shape)}, old_logprobs {tuple(inputs.old_logprobs.shape)} and "
            f"mask {tuple(inputs.mask.shape)} must have the same [B, T] shape"
        )
    advantages = inputs.advantages.to(inputs.logprobs.dtype)
    if advantages.dim() == 1 and advantages.shape[0] == shape[0]:
        advantages = advantages.unsqueeze(1).expand(shape)
    elif advantages.shape != shape:
        raise ValueError(f"advantages must be [B] or [B, T], got {tuple(advantages.shape)}")
    return inputs.mask.bool(), advantages.detach()


LossT = TypeVar("LossT", bound=type[PolicyLossBase])
LOSS_REGISTRY: dict[str, type[PolicyLossBase]] = {}


def register_loss(name: str, *, advantage_mode: str) -> Callable[[LossT], LossT]:
    """Class decorator: register a loss under `name` with its default advantage mode."""
    if advantage_mode not in ADVANTAGE_MODES:
        raise ValueError(f"unknown advantage mode {advantage_mode!r}")

    def decorate(cls: LossT) -> LossT:
        if name in LOSS_REGISTRY:
            raise ValueError(f"loss {name!r} is already registered")
        cls.name = name
        cls.default_advantage_mode = advantage_mode
        LOSS_REGISTRY[name] = cls
        return cls

    return decorate


def available_losses() -> tuple[str, ...]:
    return tuple(LOSS_REGISTRY)


def make_loss(name: str, **options: object) -> PolicyLossBase:
    """Build the loss called `name`; `options` override its fields (e.g. `clip_high=0.2`)."""
    load_plugins()
    try:
        cls = LOSS_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; expected one of {available_losses()}") from None
    allowed = {field.name for field in fields(cls)}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"loss {name!r} has no options {sorted(unknown)}; it has {sorted(allowed)}"
        )
    return cls(**options)  # type: ignore[arg-type]


@register_loss("reinforce", advantage_mode="espl")
@dataclass(frozen=True)
class ReinforceLoss(PolicyLossBase):
    """`-A * exp(logprobs - sg(old_logprobs))` per token, E-SPL's token-sum REINFORCE, with
    the ratio truncated at `ratio_cap` (truncated importance sampling).

    Against engine logprobs the ratio is 1 up to kernel round-off (1 +- 2e-5 on the `hf`
    engine), but a sampler whose numerics differ (bf16 vLLM) can give a token a ratio of
    hundreds, which would then outweigh the rest of the batch. Above the cap a token counts
    as `cap * r / sg(r)`: value `cap`, gradient `cap * grad logprobs` (TIS's min(r, C) weight
    on the score function). Below it the term is computed exactly as before. `inf` turns the
    truncation off.
    """

    aggregation: str = "token_sum"
    ratio_cap: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.ratio_cap > 1.0:
            raise ValueError(f"ratio_cap must be > 1 (on-policy ratios are 1), got {self.ratio_cap}")

    def token_terms(
        self, logprobs: Tensor, log_ratio: Tensor, advantages: Tensor, mask: Tensor
    ) -> TokenTerms:
        ratio = log_ratio.exp()
        if self.ratio_cap != math.inf:
            score = torch.exp(log_ratio - log_ratio.detach())  # 1, with the gradient of logprobs
            ratio = torch.where(ratio > self.ratio_cap, self.ratio_cap * score, ratio)
        return TokenTerms(per_token=-advantages * ratio, stats={})


@register_loss("grpo", advantage_mode="grpo")
@dataclass(frozen=True)
class PPOClipLoss(PolicyLossBase):
    """PPO's clipped surrogate with separate low and high clip ranges (clip-higher)."""

    aggregation: str = "seq_mean_token_mean"
    clip_low: float = 0.2
    clip_high: float = 0.28

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.clip_low < 1.0 or self.clip_high < 0.0:
            raise ValueError(f"need 0 <= clip_low < 1 and clip_high >= 0, got {self}")

    def token_terms(
        self, logprobs: Tensor, log_ratio: Tensor, advantages: Tensor, mask: Tensor
    ) -> TokenTerms:
        ratio = log_ratio.exp()
        clipped_ratio = ratio.clamp(1.0 - self.clip_low, 1.0 + self.clip_high)
        # The clipped branch is the minimum (and has zero gradient) exactly in these cases.
        clipped_high = mask & (advantages > 0) & (ratio > 1.0 + self.clip_high)
        clipped_low = mask & (advantages < 0) & (ratio < 1.0 - self.clip_low)
        objective = torch.where(
            clipped_high | clipped_low, clipped_ratio * advantages, ratio * advantages
        )
        stats = {
            "clip_fraction": token_mean((clipped_high | clipped_low).to(ratio.dtype), mask),
            "clip_high_fraction": token_mean(clipped_high.to(ratio.dtype), mask),
            "clip_low_fraction": token_mean(clipped_low.to(ratio.dtype), mask),
        }
        return TokenTerms(per_token=-objective, stats=stats)


@register_loss("dr_grpo", advantage_mode="dr_grpo")
@dataclass(frozen=True)
class DrGRPOLoss(PPOClipLoss):
    """PPO-clip aggregated as Dr. GRPO: token sum over a constant `max_tokens`, no length norm."""

    aggregation: str = "seq_mean_token_sum_norm"


@register_loss("cispo", advantage_mode="espl")
@dataclass(frozen=True)
class CISPOLoss(PolicyLossBase):
    """`-sg(clip(ratio, ratio_min, ratio_max)) * A * logprobs` (CISPO; E-SPL's [0, 4] option).

    Clipping the detached importance weight, not the update, keeps a gradient on every token,
    including rare ones whose ratio moved far. Summed over tokens like Tinker's `cispo` loss
    (E-SPL's reference called it there); the CISPO paper's token mean is
    `aggregation="token_mean"`.
    """

    aggregation: str = "token_sum"
    ratio_min: float = 0.0
    ratio_max: float = 4.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.ratio_min <= self.ratio_max:
            raise ValueError(f"need 0 <= ratio_min <= ratio_max, got {self}")

    def token_terms(
        self, logprobs: Tensor, log_ratio: Tensor, advantages: Tensor, mask: Tensor
    ) -> TokenTerms:
        ratio = log_ratio.detach().exp()
        weight = ratio.clamp(self.ratio_min, self.ratio_max)
        above = mask & (ratio > self.ratio_max)
        below = mask & (ratio < self.ratio_min)
        stats = {
            "clip_fraction": token_mean((above | below).to(ratio.dtype), mask),
            "clip_high_fraction": token_mean(above.to(ratio.dtype), mask),
            "clip_low_fraction": token_mean(below.to(ratio.dtype), mask),
        }
        return TokenTerms(per_token=-weight * advantages * logprobs, stats=stats)


@register_loss("ema_pg", advantage_mode="grpo")
@dataclass(frozen=True)
class EMAPGLoss(PPOClipLoss):
    """PPO-clip plus `kl_coef` times a KL to the EMA anchor (pass the top-k KL as `kl`)."""

    requires_kl: ClassVar[bool] = True
    aggregation: str = "token_mean"
    kl_coef: float = 0.001
