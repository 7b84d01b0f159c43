"""E-SPL: RL on the weights plus an evolving, TrueSkill-rated population of system prompts."""

from espl.methods import MethodSpec

METHOD = MethodSpec(
    name="espl",
    description="RL on the LoRA weights + evolutionary system prompt learning",
    train_weights=True,
    evolve=True,
    crossover=True,
)
