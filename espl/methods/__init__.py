"""The methods: one training loop (`espl.run.loop`) with different switches, one file each.

| method      | weights | prompt                                   |
|-------------|---------|------------------------------------------|
| `espl`      | RL      | evolving population (TrueSkill, mutation, crossover) |
| `rl`        | RL      | fixed seed prompt                        |
| `evolution` | frozen  | evolving population                      |
| `reflect`   | frozen  | a single lineage, mutation only          |
| `base`      | frozen  | fixed seed prompt, evaluation only       |
| `gepa`      | frozen  | the GEPA optimizer (its own runner)      |

Every method spends the same rollout budget per iteration (M prompts x B problems x N
samples), so leaderboard rows compare like with like.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    train_weights: bool
    """Take an RL step on the LoRA adapter each iteration."""
    evolve: bool
    """Keep a rated population: select M prompts, play a TrueSkill match, mutate the best."""
    crossover: bool = False
    """Also cross the best prompt with problem winners (with the configured probability)."""
    single_lineage: bool = False
    """Population of one: each iteration mutates the current prompt, which the child replaces."""
    iterate: bool = True
    """False for evaluation-only methods."""
    runner: str | None = None
    """`module:function` of a method with its own driver instead of the shared loop; it is
    called like `espl.run.train.run_training` and returns the summary."""

    @property
    def mutates(self) -> bool:
        return self.evolve or self.single_lineage


METHOD_MODULES = ("espl", "rl", "evolution", "reflect", "base", "gepa")


def get_method(name: str) -> MethodSpec:
    if name not in METHOD_MODULES:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHOD_MODULES)}")
    return import_module(f"espl.methods.{name}").METHOD


def method_names() -> tuple[str, ...]:
    return METHOD_MODULES
