"""RL only: the same RL step as E-SPL under a fixed system prompt (the seed prompt)."""

from espl.methods import MethodSpec

METHOD = MethodSpec(name="rl", description="RL on the LoRA weights, fixed system prompt", train_weights=True, evolve=False)
