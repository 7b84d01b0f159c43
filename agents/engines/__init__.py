"""Engine registry: names to engine classes, imported only when asked for.

Each engine pulls in heavy libraries (torch, vllm, httpx), so the registry stores
``"module:Class"`` targets and imports one on `make_engine`. Third-party engines register
with `register_engine(name, "package.module:Class")`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from agents.engine import Engine

_ENGINES: dict[str, str] = {
    "hf": "agents.engines.hf:HFEngine",
    "vllm": "agents.engines.vllm:VLLMEngine",
    "openai": "agents.engines.openai:OpenAIEngine",
    "fleet": "agents.engines.fleet:FleetEngine",
}


def register_engine(name: str, target: str) -> None:
    """Make `make_engine(name)` build the class at `target` (``"module:Class"``)."""
    module, _, attribute = target.partition(":")
    if not module or not attribute:
        raise ValueError(f"engine target must look like 'package.module:Class', got {target!r}")
    _ENGINES[name] = target


def list_engines() -> list[str]:
    return sorted(_ENGINES)


def engine_class(name: str) -> type:
    """The engine class registered under `name` (imports its module)."""
    try:
        target = _ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(list_engines())}") from None
    module, _, attribute = target.partition(":")
    return getattr(import_module(module), attribute)


def make_engine(name: str, model: Any = None, **kwargs: Any) -> Engine:
    """Build the engine `name` for `model` (a model name, folder, or loaded model; omitted:
    the engine's own default), passing `kwargs` to its constructor."""
    cls = engine_class(name)
    return cls(**kwargs) if model is None else cls(model, **kwargs)


__all__ = ["engine_class", "list_engines", "make_engine", "register_engine"]
