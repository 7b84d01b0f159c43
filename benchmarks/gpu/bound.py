"""The memory-bandwidth bound of batched decoding: how many tokens per second a decoder could
make at best if every decode step only had to read its bytes once from device memory.

One decode step of a batch of B sequences reads every weight the forward uses once (shared by
the batch) and each sequence's keys and values. At small batches this, not arithmetic, is
what limits decoding, so

    bound tokens/s = B * bandwidth / (weight bytes + LoRA bytes + KV-cache bytes)

with the KV-cache bytes at the mean context of the timed steps,
2 (K and V) * layers * kv_heads * head_dim * bytes per element * B * context. The input
embedding table is not counted (a step gathers B of its rows); an output head tied to it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

FORMULA = ("bound tokens/s = batch * bandwidth / (weight_bytes + lora_bytes + kv_bytes); "
           "kv_bytes = 2 * layers * kv_heads * head_dim * kv_element_bytes * batch * mean_context; "
           "the input embedding table is left out unless tied to the output head")

BANDWIDTH_GBS = {"H200": 4800.0, "H100": 3350.0}
"""Peak memory bandwidth by device-name fragment, from the vendors' data sheets (GB/s)."""


@dataclass(frozen=True)
class StepBytes:
    weight_bytes: int
    lora_bytes: int
    kv_bytes: int

    @property
    def total(self) -> int:
        return self.weight_bytes + self.lora_bytes + self.kv_bytes


def known_bandwidth_gbs(device_name: str) -> float | None:
    return next((gbs for fragment, gbs in BANDWIDTH_GBS.items() if fragment in device_name), None)


def step_bytes(model: Any, *, batch: int, mean_context: float, with_lora: bool) -> StepBytes:
    """The bytes one decode step of `batch` sequences must read, at `mean_context` tokens each."""
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    weights = lora = 0
    for name, parameter in model.named_parameters():
        size = parameter.numel() * parameter.element_size()
        if "lora_" in name:
            lora += size
        elif parameter is not embedding or embedding is head:
            weights += size
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    element = embedding.element_size()  # the cache holds keys and values in the model's dtype
    kv = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * element * batch * mean_context
    return StepBytes(weights, lora if with_lora else 0, int(kv))


def bound_tokens_per_s(bytes_per_step: StepBytes, *, batch: int, bandwidth_gbs: float) -> float:
    return batch * bandwidth_gbs * 1e9 / bytes_per_step.total


def bound_report(model: Any, *, batch: int, mean_context: float, with_lora: bool,
                 bandwidth_gbs: float | None, measured_tokens_per_s: float) -> dict[str, Any]:
    """The bound's inputs, its value and the measured rate's fraction of it (None without a bandwidth)."""
    step = step_bytes(model, batch=batch, mean_context=mean_context, with_lora=with_lora)
    report: dict[str, Any] = {"formula": FORMULA, "bandwidth_gbs": bandwidth_gbs, "mean_context": mean_context,
                              **asdict(step), "bytes_per_step": step.total}
    if bandwidth_gbs is None:
        report.update(bound_tokens_per_s=None, fraction_of_bound=None)
    else:
        bound = bound_tokens_per_s(step, batch=batch, bandwidth_gbs=bandwidth_gbs)
        report.update(bound_tokens_per_s=round(bound, 1), fraction_of_bound=round(measured_tokens_per_s / bound, 4))
    return report
