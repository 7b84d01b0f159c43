"""Trainer checkpoints: adapters, optimizer, EMA anchor, RNG states and the step counters.

A checkpoint is a folder written atomically (`espl.files.atomic`), so a run killed mid-save
leaves the previous checkpoint intact. Loading restores every RNG, so the next step after a
resume computes the same loss as the uninterrupted run.

A run directory is data: the state file is read with `torch.load(weights_only=True)`, which
builds tensors and plain containers only and refuses anything that would run code. Every
RNG state is stored in those terms (numpy's as a tensor and numbers), and so is the EMA
anchor: the factor anchor is the `anchor` adapter, the exact one a dict of per-layer deltas.
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


class CheckpointError(RuntimeError):
    """A trainer checkpoint that cannot be loaded (truncated, foreign, or not a checkpoint)."""


def rng_state() -> dict[str, Any]:
    """Every RNG the trainer touches, as tensors and plain values (loadable with weights_only)."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["key"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """`random.setstate` wants tuples where a round trip may give lists."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


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
                "optimizer_steps": trainer.optimizer_steps,
                "trained_batches": trainer.trained_batches,
                "rng": rng_state(),
                "extra": extra or {},
                **({"anchor": trainer.anchor.state_dict()} if getattr(trainer, "anchor", None) is not None else {}),
            },
            staging / STATE_FILE,
        )
        trainer.model.save_pretrained(str(staging / "adapter"), selected_adapters=[POLICY])
    return directory


def load_checkpoint(trainer: Any, directory: str | Path) -> dict[str, Any]:
    """Restore a trainer saved by `save_checkpoint`; returns the `extra` dict saved with it.

    Raises `CheckpointError` (one line) for a file that is missing, truncated, not a trainer
    checkpoint, or holds anything but tensors and plain values."""
    path = readable_directory(directory) / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        _restore(trainer, state)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{path}: cannot load the trainer checkpoint ({type(error).__name__}: {first_line})") from None
    return state.get("extra", {})


def _restore(trainer: Any, state: Any) -> None:
    if not isinstance(state, dict) or not {"adapters", "optimizer", "step", "rng"} <= set(state):
        raise ValueError("not a trainer checkpoint (adapters, optimizer, step, rng expected)")
    with torch.no_grad():
        for adapter, tensors in state["adapters"].items():
            target = adapter_tensors(trainer.model, adapter)
            missing = set(target) - set(tensors)
            if missing:
                raise KeyError(f"checkpoint lacks {len(missing)} tensors of adapter {adapter!r}")
            for name, tensor in tensors.items():
                target[name].copy_(tensor)
    anchor, saved = getattr(trainer, "anchor", None), state.get("anchor")
    if anchor is not None:
        # Checkpoints from before the exact anchor hold the factor anchor's adapter only.
        anchor.load_state_dict(saved if saved is not None else {"kind": "factors"})
    elif saved is not None:
        raise ValueError(f"the checkpoint holds an EMA anchor ({saved.get('kind')!r}) that this trainer does not use")
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.step_count = int(state["step"])
    # Before mini-batches a batch was at most one step: the batch count is the best guess.
    trainer.optimizer_steps = int(state.get("optimizer_steps", state["step"]))
    trainer.trained_batches = int(state.get("trained_batches", trainer.optimizer_steps))
    set_rng_state(state["rng"])


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().cpu().clone() for name, tensor in tensors.items()}
