"""The methods, by name. Each is one module with a class implementing `Method` (`protocol.py`).

| method      | weights | prompt                                                |
|-------------|---------|-------------------------------------------------------|
| `espl`      | RL      | evolving population (TrueSkill, mutation, crossover)  |
| `rl`        | RL      | fixed seed prompt                                     |
| `evolution` | frozen  | evolving population                                   |
| `reflect`   | frozen  | a single lineage, mutation only                       |
| `base`      | frozen  | fixed seed prompt, evaluation only                    |
| `gepa`      | frozen  | the GEPA optimizer (the `gepa` package)               |

Every method spends the same rollout budget per iteration (M prompts x B problems x N
samples), so leaderboard rows compare like with like. A new method is one module and one
registration, from any package (listed in the `espl_bench.plugins` entry-point group, see
`espl.plugins`, to be found by name on the command line):

    from espl.methods import register_method
    register_method("my-method", "mypackage.my_method:MyMethod")   # or the class itself
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from espl.methods.protocol import Method, MethodResult
from espl.plugins import load_plugins

MethodTarget = str | Callable[[], Any]
"""``"module:Class"`` (imported on first use) or a class / zero-argument factory."""

_METHODS: dict[str, MethodTarget] = {
    "espl": "espl.methods.espl:ESPL",
    "rl": "espl.methods.rl:RL",
    "evolution": "espl.methods.evolution:Evolution",
    "reflect": "espl.methods.reflect:Reflect",
    "base": "espl.methods.starting_policy:Base",
    "gepa": "espl.methods.gepa:GEPA",
}


def register_method(name: str, target: MethodTarget, *, replace: bool = False) -> None:
    """Make `get_method(name)` build `target`."""
    if name in _METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered")
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"a method target looks like 'package.module:Class', got {target!r}")
    _METHODS[name] = target


def method_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(_METHODS)


def method_class(name: str) -> Callable[[], Any]:
    """The class (or factory) registered under `name`; imports its module."""
    load_plugins()
    try:
        target = _METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(method_names())}") from None
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        return getattr(import_module(module), attribute)
    return target


def get_method(name: str) -> Method:
    """A fresh instance of the method registered under `name`."""
    method = method_class(name)()
    if not isinstance(method, Method):
        raise TypeError(f"method {name!r} does not implement the Method protocol (name, description, trains_weights, run)")
    return method


__all__ = ["Method", "MethodResult", "get_method", "method_class", "method_names", "register_method"]
