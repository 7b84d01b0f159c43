"""Environment registry: Gymnasium ids, short CLI aliases, and third-party plugins.

A new environment is one module that defines a `TextEnv` subclass and calls `register(...)`.
Importing `envs` runs `load_all`, so Gymnasium ids work right after `import envs`.
Built-in envs live in the modules of `BUILTIN_MODULES`; a third-party package exposes its
module in the ``espl_bench.envs`` entry-point group::

    [project.entry-points."espl_bench.envs"]
    my-env = "my_package.my_env"      # a module that calls register(...) on import

The entry point may also name a zero-argument callable, which is called.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import gymnasium as gym

from envs.base import TextEnv

ENTRY_POINT_GROUP = "espl_bench.envs"
BUILTIN_MODULES = ("envs.math.register", "envs.search.register", "envs.reasoning.register")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnvInfo:
    """What the registry knows about one environment, without building it."""

    id: str
    alias: str
    entry_point: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    kind: str = ""
    description: str = ""


_ENVS: dict[str, EnvInfo] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def register(
    id: str,
    entry_point: str | type[TextEnv],
    *,
    alias: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    kind: str = "",
    description: str = "",
) -> EnvInfo:
    """Register an env under a Gymnasium id (``namespace/Name-vN``) and a short alias.

    Re-registering the same id with the same entry point is a no-op, so modules can be
    re-imported safely.
    """
    target = entry_point
    if isinstance(entry_point, type):
        entry_point = f"{entry_point.__module__}:{entry_point.__qualname__}"
    alias = (alias or id.split("/")[-1].rsplit("-v", 1)[0]).lower()
    info = EnvInfo(id, alias, entry_point, dict(kwargs or {}), kind, description or _first_line(target))
    previous = _ENVS.get(id)
    if previous is not None:
        if previous.entry_point != info.entry_point or dict(previous.kwargs) != dict(info.kwargs):
            raise ValueError(f"env id {id!r} is already registered with another entry point")
        return previous
    if alias in _ALIASES and _ALIASES[alias] != id:
        raise ValueError(f"alias {alias!r} already names {_ALIASES[alias]!r}")
    gym.register(id=id, entry_point=target, kwargs=dict(info.kwargs), disable_env_checker=True)
    _ENVS[id] = info
    _ALIASES[alias] = id
    return info


def _first_line(target: object) -> str:
    doc = getattr(target, "__doc__", None) if isinstance(target, type) else None
    return doc.strip().splitlines()[0] if doc else ""


def load_all() -> None:
    """Import the built-in env modules and every plugin of the entry-point group (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            target = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in envs down
            log.warning("could not load env plugin %s (%s): %s", ep.name, ep.value, exc)
            continue
        if callable(target):
            target()


def resolve(name: str) -> str:
    """The Gymnasium id for an id or alias (case-insensitive alias)."""
    load_all()
    if name in _ENVS:
        return name
    try:
        return _ALIASES[name.lower()]
    except KeyError:
        known = ", ".join(sorted(_ALIASES))
        raise KeyError(f"unknown environment {name!r}; known: {known}") from None


def info(name: str) -> EnvInfo:
    return _ENVS[resolve(name)]


def make(name: str, **kwargs: Any) -> TextEnv:
    """Build an env by id or alias. Returns the raw `TextEnv` (no Gymnasium wrappers).

    `gymnasium.make(id)` works as well; this helper skips the wrappers because the rollout
    driver steps many envs together through `TextEnv.step_batch`.
    """
    env = gym.make(resolve(name), **kwargs).unwrapped
    if not isinstance(env, TextEnv):
        raise TypeError(f"{name!r} is not a TextEnv")
    return env


def list_envs() -> list[EnvInfo]:
    load_all()
    return sorted(_ENVS.values(), key=lambda e: (e.kind, e.id))
