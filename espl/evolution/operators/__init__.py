"""Variation operators: each proposes a child system prompt from one iteration's evidence.

`mutation` rewrites the iteration's best prompt from its own mixed-outcome rollouts;
`crossover` lets the best prompt borrow from prompts that strictly won some problems. Both
implement `Operator` (`base.py`) and never raise on anything the reflector writes.

A new operator is one module with a class implementing `Operator` plus one registration:

    from espl.evolution.operators import register_operator
    register_operator("my-op", MyOperator)          # MyOperator(**options) -> an Operator

after which `--set 'evolution.operators=["mutation", "my-op"]'` uses it, with options from
`evolution.operator_options."my-op"` (its `probability` is the evolver's, 1.0 by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from typing import Any

from espl.evolution.operators.protocol import IdSource, Operator, OperatorContext, Proposal, build_child
from espl.evolution.operators.crossover import Crossover, CrossoverConfig, best_prompt, crossover
from espl.evolution.operators.edits import Edit, EditRules, ParsedEdits, is_valid_principle, parse_edits
from espl.evolution.operators.evidence import strict_winners
from espl.evolution.operators.mutation import Mutation, MutationConfig, mutate
from espl.plugins import load_plugins

OperatorFactory = Callable[..., Operator]


def _mutation(**options: Any) -> Operator:
    return Mutation(MutationConfig(**options))


def _crossover(**options: Any) -> Operator:
    return Crossover(CrossoverConfig(**options))


_OPERATORS: dict[str, OperatorFactory] = {"mutation": _mutation, "crossover": _crossover}
_OPTIONS: dict[str, type] = {"mutation": MutationConfig, "crossover": CrossoverConfig}
"""The settings dataclass behind each built-in operator's options (for validation)."""


def register_operator(name: str, factory: OperatorFactory, *, replace: bool = False) -> None:
    """Make `make_operator(name, **options)` call `factory(**options)`."""
    if name in _OPERATORS and not replace:
        raise ValueError(f"operator {name!r} is already registered")
    _OPERATORS[name] = factory


def operator_names() -> list[str]:
    load_plugins()
    return sorted(_OPERATORS)


def make_operator(name: str, **options: Any) -> Operator:
    """Build a registered operator; unknown names and options are a `ValueError`."""
    load_plugins()
    try:
        factory = _OPERATORS[name]
    except KeyError:
        raise ValueError(f"unknown operator {name!r}; choose from {', '.join(operator_names())}") from None
    settings = _OPTIONS.get(name)
    if settings is not None and is_dataclass(settings):
        known = {f.name for f in fields(settings)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"operator {name!r} has no option(s) {', '.join(unknown)}; it takes {sorted(known)}")
    try:
        return factory(**options)
    except TypeError as error:
        raise ValueError(f"operator {name!r}: {error}") from None


__all__ = [
    "Crossover", "CrossoverConfig", "Edit", "EditRules", "IdSource", "Mutation", "MutationConfig", "Operator",
    "OperatorContext", "ParsedEdits", "Proposal", "best_prompt", "build_child", "crossover", "is_valid_principle",
    "make_operator", "mutate", "operator_names", "parse_edits", "register_operator", "strict_winners",
]
