"""File formats every part of a run writes: crash-safe JSON Lines logs and atomic folders.

A leaf package: it imports nothing else from `espl`, so `rl/`, `evolution/` and the run
harness can all use it without importing each other.
"""
