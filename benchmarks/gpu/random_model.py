"""A randomly initialised model of a real architecture, built on its device, and a tokenizer
made offline for it: what the GPU check measures, where no weights can be downloaded.

Step time, memory and decode speed depend on the shapes and dtypes, not on the weights'
values, so a random Qwen2.5-7B measures what the real one would. The tokenizer is a
word-level one over the model's whole vocabulary (token `i` is the word `t{i}`): the engine
needs one to find the end-of-sequence id and to decode completions, and nothing here reads
its text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FULL_CONFIG = HERE / "qwen2.5-7b.json"

DRY_RUN_SHAPES = {
    "hidden_size": 128,
    "intermediate_size": 676,  # Qwen2.5-7B's ratio to the hidden size (18944 / 3584)
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,  # 7:1 query to key/value heads in the full model; 4:1 here
    "vocab_size": 8192,
    "max_position_embeddings": 4096,
}
"""The same architecture scaled down for a CPU run in seconds (head size 32 instead of 128)."""


def load_config(*, dry_run: bool) -> Any:
    """The shipped Qwen2.5-7B config, or its scaled-down copy for the CPU dry run."""
    from transformers import AutoConfig

    fields = json.loads(FULL_CONFIG.read_text())
    if dry_run:
        fields.update(DRY_RUN_SHAPES)
        fields["bos_token_id"] = fields["eos_token_id"] = DRY_RUN_SHAPES["vocab_size"] - 1
    fields.pop("architectures", None)
    return AutoConfig.for_model(fields.pop("model_type"), **fields)


def build_model(config: Any, *, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """The causal LM drawn from `config`'s initialiser directly on `device` in `dtype` (no
    copy through the host: 7.6B parameters initialise in seconds on a GPU), in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def word_tokenizer(config: Any) -> Any:
    """A fast tokenizer with one word per id of `config`'s vocabulary and its end-of-sequence id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {f"t{i}": i for i in range(config.vocab_size)}
    words = Tokenizer(models.WordLevel(vocabulary, unk_token="t0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = f"t{config.eos_token_id}"
    return PreTrainedTokenizerFast(tokenizer_object=words, eos_token=eos, pad_token=eos)


def describe(model: Any) -> dict[str, Any]:
    """The shapes and sizes the summary reports."""
    config = model.config
    heads = config.num_attention_heads
    return {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "layers": config.num_hidden_layers,
        "attention_heads": heads,
        "kv_heads": config.num_key_value_heads,
        "head_dim": getattr(config, "head_dim", None) or config.hidden_size // heads,
        "vocab_size": config.vocab_size,
        "rope_theta": _rope_theta(config),
        "rms_norm_eps": config.rms_norm_eps,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "max_position_embeddings": config.max_position_embeddings,
        "attention": getattr(config, "_attn_implementation", None),
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


def _rope_theta(config: Any) -> float | None:
    parameters = getattr(config, "rope_parameters", None) or {}
    return parameters.get("rope_theta", getattr(config, "rope_theta", None))
