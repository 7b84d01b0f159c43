"""Registration of the reasoning-gym envs (difficulty chosen for small models)."""

from envs.reasoning.env import ReasoningGymEnv
from envs.registry import register

register(
    "espl/Arithmetic-v0",
    ReasoningGymEnv,
    alias="arithmetic",
    kind="reasoning",
    kwargs={
        "dataset": "basic_arithmetic",
        "config": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1, "operators": ["+", "-"],
                   "allow_parentheses": False, "allow_negation": False},
    },
    description="one-digit addition and subtraction (reasoning-gym basic_arithmetic)",
)
register(
    "espl/Arithmetic-Hard-v0",
    ReasoningGymEnv,
    alias="arithmetic-hard",
    kind="reasoning",
    kwargs={
        "dataset": "basic_arithmetic",
        "config": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2, "operators": ["+", "-", "*"],
                   "allow_parentheses": False, "allow_negation": False},
    },
    description="two- and three-term arithmetic with up to two digits (reasoning-gym basic_arithmetic)",
)
