"""Evolution only: E-SPL's population, ratings, mutation and crossover with frozen weights."""

from espl.methods import MethodSpec

METHOD = MethodSpec(
    name="evolution",
    description="reflective prompt evolution (population + TrueSkill), frozen weights",
    train_weights=False,
    evolve=True,
    crossover=True,
)
