"""Registers the built-in math environments (imported by `envs.registry.load_all`).

Every env is `envs.math.env:MathEnv` on one dataset of `envs.math.datasets.DATASETS`; pass
``split="train" | "test" | "all"`` to `envs.registry.make`.
"""

from __future__ import annotations

from envs.math.datasets import AIME_YEARS, DATASETS
from envs.registry import register

ENTRY_POINT = "envs.math.env:MathEnv"
KIND = "math"

# (env id, CLI alias, dataset name in DATASETS)
MATH_ENVS: tuple[tuple[str, str, str], ...] = (
    ("espl/AIME-v0", "aime", "aime"),
    *((f"espl/AIME{year}-v0", f"aime{year % 100}", f"aime{year}") for year in AIME_YEARS),
    ("espl/AMC23-v0", "amc23", "amc23"),
    ("espl/MATH500-v0", "math500", "math500"),
    ("espl/GSM8K-v0", "gsm8k", "gsm8k"),
    ("espl/HMMT-v0", "hmmt", "hmmt"),
    ("espl/DAPO-Math-v0", "dapo", "dapo"),
)

for env_id, alias, dataset in MATH_ENVS:
    register(
        env_id,
        ENTRY_POINT,
        alias=alias,
        kwargs={"dataset": dataset},
        kind=KIND,
        description=DATASETS[dataset].description,
    )
