"""Procedurally generated reasoning tasks from the `reasoning-gym` package, scored offline."""

from envs.reasoning.env import ReasoningGymEnv

__all__ = ["ReasoningGymEnv"]
