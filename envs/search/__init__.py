"""Multi-hop search QA environments (the Search-R1 protocol) and their datasets and rewards."""

from envs.search.env import SearchEnv

__all__ = ["SearchEnv"]
