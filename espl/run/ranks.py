"""How a run is split over `torchrun`'s processes: rank 0 runs it, the others only train.

Rank 0 does everything a single process does: rollouts, evolution, evaluation, and all I/O
(the run directory, prints, checkpoints, published adapters). The other ranks load no engine
and no retrieval server; each builds the trainer and waits for rank 0's messages (`follow`):

- `start`, with the run's plan (`espl.run.plan`): build the trainer (rank 0 sends it once its own model is
  loaded, just before both build their trainers together);
- `load`, with a checkpoint folder: restore the trainer from it (a resumed run);
- `step`, with the batch: take the trainer step together with rank 0
  (`espl.rl.distributed` shares its micro-batches and sums the gradients);
- `stop`, with rank 0's exit code: the run is over (or failed on rank 0).

Messages go over the process group, pickled between our own ranks; nothing read from disk is
ever unpickled (checkpoints load with `weights_only`). A rank that fails makes `torchrun`
stop the others, and every wait has a timeout (`espl.rl.distributed`).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agents.trajectory import Trajectory
    from espl.rl.distributed import DistributedContext
    from espl.run.plan import RunPlan

START, LOAD, STEP, STOP = "start", "load", "step", "stop"


class Followers:
    """Rank 0's side: what it tells the other ranks."""

    def __init__(self, ranks: DistributedContext) -> None:
        self.ranks = ranks
        self.stopped = False

    def start(self, plan: RunPlan) -> None:
        self.ranks.broadcast((START, plan))

    def load(self, checkpoint: Any) -> None:
        self.ranks.broadcast((LOAD, str(checkpoint)))

    def step(self, trajectories: Sequence[Trajectory], group_keys: Sequence[Hashable]) -> None:
        self.ranks.broadcast((STEP, ([training_copy(t) for t in trajectories], list(group_keys))))

    def stop(self, code: int) -> None:
        """Tell the others the run is over (once); a rank that is gone already is no reason to fail."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.ranks.broadcast((STOP, int(code)))
        except Exception as error:  # noqa: BLE001 - the run's own outcome is what matters here
            print(f"could not stop the other ranks: {type(error).__name__}: {error}", file=sys.stderr)


def training_copy(trajectory: Trajectory) -> Trajectory:
    """What the trainer reads of a trajectory (ids, mask, logprobs, reward), without its chat and turns."""
    return dataclasses.replace(trajectory, system_prompt=None, turns=[], messages=[], info={}, timings={})


def follow(ranks: DistributedContext) -> int:
    """A rank > 0's whole run: build the trainer when told, step with rank 0, stop when told.
    Returns rank 0's exit code."""
    from espl.rl.checkpoint import load_checkpoint
    from espl.run.builder import build_trainer

    trainer = None
    while True:
        kind, payload = ranks.broadcast()
        if kind == STOP:
            return int(payload)
        if kind == START:
            trainer, _ = build_trainer(payload, adapter_dir=None, distributed=ranks)
        elif trainer is None:
            raise RuntimeError(f"rank {ranks.rank}: {kind!r} before the trainer was built")
        elif kind == LOAD:
            load_checkpoint(trainer, payload)
        elif kind == STEP:
            trajectories, group_keys = payload
            trainer.step(trajectories, group_keys)
        else:
            raise RuntimeError(f"rank {ranks.rank}: unknown message {kind!r}")
