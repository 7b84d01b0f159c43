"""E-SPL and its baselines: RL on the weights, system-prompt evolution, the harness."""

__version__ = "0.1.0"
