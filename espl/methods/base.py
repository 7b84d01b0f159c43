"""Base: no training; evaluates the starting policy under the seed prompt."""

from espl.methods import MethodSpec

METHOD = MethodSpec(
    name="base", description="evaluation of the starting policy only", train_weights=False, evolve=False, iterate=False
)
