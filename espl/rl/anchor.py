"""EMA-PG's anchor for a LoRA policy, two ways: an EMA of the factors, or the exact EMA of the weights.

EMA-PG moves the anchor as `anchor <- eta * anchor + (1 - eta) * policy` in weight space.
With LoRA the policy's weights are W + scale·B·A per adapted layer, and two anchors offer
themselves:

- `FactorAnchor` (`rl.kl.anchor = "factors"`): a second peft adapter holding EMA(A) and
  EMA(B). It costs one more adapter (rank x (in + out) floats per layer) and runs through
  peft's own LoRA path, but its weights are W + scale·EMA(B)·EMA(A), which is not the EMA of
  the weights: EMA(B)·EMA(A) - EMA(B·A) is a covariance of the two factors over the EMA's
  window, non-zero as soon as both move.
- `ExactAnchor` (`rl.kl.anchor = "exact"`): an fp32 EMA of each adapted layer's delta
  scale·B·A, out x in floats per layer, so the anchor is exactly W + EMA(scale·B·A). Its
  forward runs the base layer (adapters off) plus x·ΔW_emaᵀ, added by a forward hook on each
  LoRA-wrapped module while `active()`. Memory: 4·out·in bytes per adapted layer
  (`nbytes()`), a full fp32 copy of every adapted matrix: 0.42 GB for SmolLM2-135M with all
  seven projections, about 11 GB for a 3B model; the anchor's forward costs one more matmul
  of the full layer size per adapted layer.

Both start at the policy, move only through `update(eta)`, and keep their state where a
checkpoint finds it (`state_dict` returns tensors and plain values only, loadable with
`torch.load(weights_only=True)`; the factor anchor's tensors are the `anchor` adapter's,
saved with the adapters).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import torch
from torch import Tensor

from espl.rl.ema import ema_update_
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors

ANCHOR_KINDS = ("factors", "exact")


class Anchor(Protocol):
    kind: str

    def update(self, eta: float) -> None:
        """Move the anchor toward the current policy: `anchor <- eta anchor + (1 - eta) policy`."""

    def active(self) -> Any:
        """Context manager: the model's forward is the anchor's inside it."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def make_anchor(model: Any, kind: str) -> Anchor:
    """The anchor of `kind` on a peft model with a `policy` adapter (and an `anchor` one for factors)."""
    if kind == "factors":
        return FactorAnchor(model)
    if kind == "exact":
        return ExactAnchor(model)
    raise ValueError(f"unknown EMA anchor {kind!r}; expected one of {ANCHOR_KINDS}")


class FactorAnchor:
    """The EMA of the LoRA factors, kept as the peft adapter `anchor` next to `policy`."""

    kind = "factors"

    def __init__(self, model: Any):
        if ANCHOR not in model.peft_config:
            raise ValueError("the factor anchor needs the model's `anchor` adapter (attach_lora(with_anchor=True))")
        self.model = model

    def update(self, eta: float) -> None:
        ema_update_(adapter_tensors(self.model, ANCHOR), adapter_tensors(self.model, POLICY), eta)

    @contextmanager
    def active(self) -> Iterator[None]:
        previous = self.model.active_adapter
        self.model.set_adapter(ANCHOR)
        try:
            yield
        finally:
            self.model.set_adapter(previous)
            # set_adapter marks only the active adapter trainable; keep the anchor frozen.
            for tensor in adapter_tensors(self.model, ANCHOR).values():
                tensor.requires_grad_(False)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)


class ExactAnchor:
    """The EMA of every adapted layer's delta scale·B·A, in fp32, applied by forward hooks."""

    kind = "exact"

    def __init__(self, model: Any):
        self.model = model
        self.layers = lora_layers(model)
        if not self.layers:
            raise ValueError("the model has no LoRA layers with a `policy` adapter")
        with torch.no_grad():
            self.deltas: dict[str, Tensor] = {name: _delta(layer) for name, layer in self.layers.items()}

    def nbytes(self) -> int:
        """Memory the anchor holds: out x in fp32 values per adapted layer."""
        return sum(delta.numel() * delta.element_size() for delta in self.deltas.values())

    @torch.no_grad()
    def update(self, eta: float) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        for name, layer in self.layers.items():
            self.deltas[name].lerp_(_delta(layer), 1.0 - eta)

    @contextmanager
    def active(self) -> Iterator[None]:
        handles = []
        with self.model.disable_adapter():  # each LoRA layer returns its base layer's output
            try:
                for name, layer in self.layers.items():
                    handles.append(layer.register_forward_hook(_adds(self.deltas[name])))
                yield
            finally:
                for handle in handles:
                    handle.remove()

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "deltas": {name: delta.detach().cpu().clone() for name, delta in self.deltas.items()}}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        deltas = state["deltas"]
        if set(deltas) != set(self.deltas):
            raise KeyError(f"the checkpoint's exact anchor covers {len(deltas)} layers, this model has {len(self.deltas)}")
        for name, delta in deltas.items():
            self.deltas[name].copy_(delta)


def lora_layers(model: Any) -> dict[str, Any]:
    """The LoRA-wrapped linear modules that carry the `policy` adapter, by module path."""
    layers = {}
    for name, module in model.named_modules():
        if POLICY in getattr(module, "lora_A", {}):
            if not hasattr(module, "get_delta_weight") or not isinstance(module.get_base_layer(), torch.nn.Linear):
                raise ValueError(f"the exact anchor handles LoRA on linear layers only, not {name} ({type(module).__name__})")
            layers[name] = module
    return layers


def _delta(layer: Any) -> Tensor:
    """scale·B·A of the policy adapter as an [out, in] fp32 tensor (peft transposes fan-in-fan-out)."""
    return layer.get_delta_weight(POLICY).detach().float()


def _adds(delta: Tensor) -> Any:
    """A forward hook that adds x·deltaᵀ to the (base layer's) output."""

    def hook(module: Any, args: tuple[Any, ...], output: Tensor) -> Tensor:
        x = args[0]
        return output + torch.nn.functional.linear(x, delta.to(dtype=x.dtype)).to(output.dtype)

    return hook


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"the checkpoint's EMA anchor is {state.get('kind')!r}, this trainer's is {kind!r} (rl.kl.anchor)")
