"""The check that a synchronous step trains only on samples of the adapter it updates.

Between two updates every rollout samples with the adapter the engine took after the last
one, so in this loop a trajectory sampled with any other version means that version never
reached a server, or a server answered with an older one: the step would be silently
off-policy. Engines that say which version served each turn (the `fleet` engine) are checked;
others record nothing and are not. Evaluation records the same share for the version it
pinned (`adapter_share`), without stopping the run.
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.engine import Adapter
from agents.trajectory import Trajectory

CURRENT_SHARE = "sampled_with_current_adapter"
"""The metrics key (under `train`): the share of recorded turns sampled with the current version."""


class StaleSamples(RuntimeError):
    """A trajectory of a synchronous step was sampled with another adapter version."""


def adapter_share(trajectories: Sequence[Trajectory], adapter: Adapter | None) -> float | None:
    """The share of turns that name `adapter` as their sampler (None: no turn names one)."""
    named = [turn.adapter for trajectory in trajectories for turn in trajectory.turns if turn.adapter is not None]
    if not named:
        return None
    expected = adapter.name if adapter is not None else None
    return sum(name == expected for name in named) / len(named)


def current_adapter_share(trajectories: Sequence[Trajectory], adapter: Adapter | None) -> float | None:
    """`adapter_share`, raising `StaleSamples` if any turn names another version."""
    share = adapter_share(trajectories, adapter)
    if share is None or share == 1.0:
        return share
    expected = adapter.name if adapter is not None else None
    named = [turn.adapter for trajectory in trajectories for turn in trajectory.turns if turn.adapter is not None]
    stale = sorted({name for name in named if name != expected})
    count = sum(name != expected for name in named)
    raise StaleSamples(f"{count} of {len(named)} turns were sampled with {stale}, not the current {expected!r}")
