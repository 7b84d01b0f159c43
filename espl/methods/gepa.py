"""GEPA: the reference GEPA optimizer (the `gepa` package) evolving the system prompt, frozen weights.

It spends the same training-rollout budget as `evolution` (iterations x M x B x N), counted
rollout by rollout; see `espl.gepa` for how its candidates, scores and budget are recorded.
"""

from espl.methods import MethodSpec

METHOD = MethodSpec(
    name="gepa",
    description="GEPA reflective Pareto prompt optimization (the gepa package), frozen weights",
    train_weights=False,
    evolve=False,
    runner="espl.gepa.runner:run_gepa",
)
