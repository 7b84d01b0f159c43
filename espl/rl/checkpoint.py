"""Trainer checkpoints: adapters, optimizer, EMA anchor, RNG states and the step counter.

A checkpoint is a folder written atomically (`espl.files.atomic`), so a run killed mid-save leaves
the previous checkpoint intact. Loading restores every RNG, so the
next step after a resume computes the same loss as the uninterrupted run.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from espl.files.atomic import readable_directory, staged_directory
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors

STATE_FILE = "trainer.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(trainer: Any, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the trainer's state to `directory` (replaced atomically if it exists)."""
    directory = Path(directory)
    with staged_directory(directory) as staging:
        adapters = {POLICY: _cpu(adapter_tensors(trainer.model, POLICY))}
        if ANCHOR in trainer.model.peft_config:
            adapters[ANCHOR] = _cpu(adapter_tensors(trainer.model, ANCHOR))
        torch.save(
            {
                "adapters": adapters,
                "optimizer": trainer.optimizer.state_dict(),
                "step": trainer.step_count,
                "rng": rng_state(),
                "extra": extra or {},
            },
            staging / STATE_FILE,
        )
        trainer.model.save_pretrained(str(staging / "adapter"), selected_adapters=[POLICY])
    return directory


def load_checkpoint(trainer: Any, directory: str | Path) -> dict[str, Any]:
    """Restore a trainer saved by `save_checkpoint`; returns the `extra` dict saved with it."""
    state = torch.load(readable_directory(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    with torch.no_grad():
        for adapter, tensors in state["adapters"].items():
            target = adapter_tensors(trainer.model, adapter)
            missing = set(target) - set(tensors)
            if missing:
                raise KeyError(f"checkpoint lacks {len(missing)} tensors of adapter {adapter!r}")
            for name, tensor in tensors.items():
                target[name].copy_(tensor)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.step_count = int(state["step"])
    set_rng_state(state["rng"])
    return state.get("extra", {})


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in tensors.items()}
