"""LoRA adapters on the policy: the trained `policy` adapter and EMA-PG's `anchor` adapter.

Both adapters live in the same peft model, so the EMA anchor costs one extra adapter rather
than a second copy of the base weights. Publishing writes the policy adapter as a normal peft
folder (what vLLM's `LoRARequest` loads).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from agents.engine import Adapter
from espl.rl.settings import LoraSettings

POLICY = "policy"
ANCHOR = "anchor"


def attach_lora(model: Any, settings: LoraSettings, *, with_anchor: bool = False, seed: int = 0) -> Any:
    """Wrap `model` in a peft model with a trainable `policy` adapter (and a frozen `anchor`).

    A model that already is a peft model with a `policy` adapter is returned as is. peft draws
    the A factors from torch's global RNG; they are drawn here from `seed` instead (the global
    RNG is left as it was), so two runs with one seed start from the same adapter: B = 0 hides
    A from the first rollouts, but not from the first gradient. Adapters are float32 whatever
    the base's dtype (`float32_adapters`).
    """
    from peft import LoraConfig, PeftModel, get_peft_model

    if isinstance(model, PeftModel) and POLICY in model.peft_config:
        peft_model = model
    else:
        config = LoraConfig(
            r=settings.rank,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules),
            task_type="CAUSAL_LM",
        )
        with _seeded(model, seed):
            peft_model = get_peft_model(model, config, adapter_name=POLICY, autocast_adapter_dtype=True)
    if with_anchor and ANCHOR not in peft_model.peft_config:
        peft_model.add_adapter(ANCHOR, peft_model.peft_config[POLICY], autocast_adapter_dtype=True)
        with torch.no_grad():
            anchor = adapter_tensors(peft_model, ANCHOR)
            for name, tensor in adapter_tensors(peft_model, POLICY).items():
                anchor[name].copy_(tensor)
        for tensor in adapter_tensors(peft_model, ANCHOR).values():
            tensor.requires_grad_(False)
    peft_model.set_adapter(POLICY)
    for tensor in adapter_tensors(peft_model, POLICY).values():
        tensor.requires_grad_(True)
    float32_adapters(peft_model)
    return peft_model


def float32_adapters(peft_model: Any) -> None:
    """Every LoRA factor in float32, also on a bf16 base. bf16 keeps 8 significant bits, so an
    Adam step smaller than 1/256 of a weight would round away, and the optimizer's moments
    (which take their parameter's dtype) would be as coarse. peft upcasts new adapters itself
    (`autocast_adapter_dtype`); a model handed in with bf16 adapters is upcast here. peft's
    LoRA layers cast their input to the factors' dtype and the result back to the base's."""
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name and parameter.is_floating_point() and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()


@contextmanager
def _seeded(model: Any, seed: int) -> Iterator[None]:
    """Torch's RNGs (CPU and the model's GPU) seeded with `seed` inside, restored after."""
    device = next(model.parameters()).device
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def adapter_tensors(peft_model: Any, adapter: str) -> dict[str, Tensor]:
    """The parameters of one adapter, keyed by module path with the adapter name removed."""
    marker = f".{adapter}."
    tensors = {}
    for name, parameter in peft_model.named_parameters():
        if "lora_" in name and marker in name:
            tensors[name.replace(marker, ".")] = parameter
    if not tensors:
        raise KeyError(f"the model has no LoRA adapter named {adapter!r}")
    return tensors


def publish_adapter(peft_model: Any, directory: str | Path, version: int, name: str = POLICY) -> Adapter:
    """Save adapter `name` as a standalone peft folder `directory/v{version}` (atomically).

    Engines that load adapters from disk (vLLM) get an `Adapter` with a new version each time,
    so they never reuse a cached older copy.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"v{version:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=".publish-", dir=directory))
    try:
        peft_model.save_pretrained(str(tmp), selected_adapters=[name])
        saved = tmp / name if (tmp / name / "adapter_config.json").exists() else tmp
        config_path = saved / "adapter_config.json"
        config = json.loads(config_path.read_text())
        config["base_model_name_or_path"] = config.get("base_model_name_or_path") or ""
        config_path.write_text(json.dumps(config, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(saved, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Adapter(name=name, path=str(target), version=version)
