"""E-SPL's variation operators: mutation and crossover of system prompts by a reflector LLM.

`mutate` rewrites the iteration's best prompt from its own mixed-outcome rollouts;
`crossover` lets the best prompt borrow from prompts that strictly won some problems. Both
return an `OperatorResult` (a child prompt, or None and the reason, plus the reflection budget
spent) and never raise on anything the reflector writes.
"""

from espl.evolution.operators.crossover import CrossoverConfig, best_prompt, crossover
from espl.evolution.operators.edits import Edit, EditRules, ParsedEdits, is_valid_principle, parse_edits
from espl.evolution.operators.mutation import MutationConfig, mutate
from espl.evolution.reflector import (
    DEFAULT_REFLECTION_SAMPLING,
    Reflector,
    ReflectorLike,
    ReflectorReply,
    ReflectorUsage,
)
from espl.evolution.operators.base import OperatorResult
from espl.evolution.operators.evidence import strict_winners

__all__ = [
    "DEFAULT_REFLECTION_SAMPLING",
    "CrossoverConfig",
    "Edit",
    "EditRules",
    "MutationConfig",
    "OperatorResult",
    "ParsedEdits",
    "Reflector",
    "ReflectorLike",
    "ReflectorReply",
    "ReflectorUsage",
    "best_prompt",
    "crossover",
    "is_valid_principle",
    "mutate",
    "parse_edits",
    "strict_winners",
]
