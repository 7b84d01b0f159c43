"""Merge a LoRA adapter folder into its base model and save a plain transformers folder.

The merge runs in float32 (the trainer's adapters are float32; a bf16 base would round the
small LoRA delta away if merged in bf16) and the result is saved in `dtype`. The adapter is
loaded by peft from its `.safetensors` file; the export checked that it is the only weights
file in the folder, so nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path


def merge_adapter(model: str, adapter: str | Path, out: str | Path, *, dtype: str = "float32") -> Path:
    """`model` (a built-in name, folder or hub id) plus `adapter`, merged, saved to `out` with
    its tokenizer (safetensors weights)."""
    import torch
    from peft import PeftModel

    from agents import models

    base = models.load_model(model, dtype="float32", device="cpu")
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged = merged.to(getattr(torch, dtype))
    merged.config.dtype = getattr(torch, dtype)
    out = Path(out)
    merged.save_pretrained(str(out), safe_serialization=True)
    models.load_tokenizer(model).save_pretrained(str(out))
    return out
