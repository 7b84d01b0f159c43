"""Opening a run directory: a fresh start, or a resume from its checkpoint, never silent loss.

A run directory is resumed from `checkpoint/` (the loop state and the trainer after the last
completed iteration): records of later iterations, written by the iteration a kill cut short,
are cut away and that iteration runs again. Anything else is refused with a one-line
`RunDirError` rather than guessed at, and nothing completed is ever deleted:

- records of completed iterations but no checkpoint (it was deleted or never written);
- a checkpoint whose loop state is unreadable, or whose iteration is missing from
  `metrics.jsonl` (a damaged log: resuming would lose that iteration's record);
- a trainer checkpoint that does not load (checked where the trainer is built).

Checkpoints are read with `torch.load(weights_only=True)` (`espl.rl.checkpoint`): a run
directory is data, and never runs code.
"""

from __future__ import annotations

import json
from pathlib import Path

from espl.files.atomic import readable_directory
from espl.files.jsonl import JsonlLog
from espl.run.context import LoopState
from espl.run.run_dir import CHECKPOINT, LOOP_STATE, METRICS, PROMPTS, ROLLOUTS, RunDir


class RunDirError(RuntimeError):
    """A run directory that cannot be started or resumed as it is (one line, for the user)."""


def open_run(run_dir: RunDir) -> tuple[LoopState, bool]:
    """The loop state to continue from, and whether it is a resume (see the module doc)."""
    run_dir.create()
    state = checkpoint_state(run_dir)
    if state is None:
        _refuse_completed_records(run_dir)
        for name in (METRICS, ROLLOUTS, PROMPTS):  # what an unfinished first iteration left
            run_dir.log(name).truncate_after(-1, key="iteration" if name != PROMPTS else "step")
        return LoopState(), False
    _check_metrics_reach(run_dir, state.iteration)
    for name in (METRICS, ROLLOUTS):
        run_dir.truncate_after(name, state.iteration)
    run_dir.truncate_after(PROMPTS, state.iteration, key="step")
    return state, True


def checkpoint_state(run_dir: RunDir) -> LoopState | None:
    """The loop state of the run's checkpoint, read without changing anything (None: no checkpoint)."""
    loop_file = readable_directory(run_dir.file(CHECKPOINT)) / LOOP_STATE
    return _read_state(loop_file) if loop_file.exists() else None


def _refuse_completed_records(run_dir: RunDir) -> None:
    done = sorted({int(r.get("iteration", -1)) for r in _records(run_dir.log(METRICS))})
    if done:
        raise RunDirError(
            f"{run_dir.path}: {CHECKPOINT}/ is missing but {METRICS} holds completed iteration(s) "
            f"{done[0]}..{done[-1]}; restore the checkpoint, or start a new run directory"
        )


def _read_state(loop_file: Path) -> LoopState:
    try:
        return LoopState.from_dict(json.loads(loop_file.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunDirError(f"{loop_file}: unreadable loop state ({type(error).__name__}: {error})") from None


def _check_metrics_reach(run_dir: RunDir, iteration: int) -> None:
    """The metrics log must hold the checkpoint's last iteration (or nothing was evaluated yet)."""
    log = run_dir.log(METRICS)
    if iteration == 0 and not log.exists():
        return
    seen = {int(r.get("iteration", -1)) for r in _records(log)}
    if iteration not in seen and (iteration > 0 or seen):
        torn = " (its last line is torn)" if log.has_torn_tail() else ""
        raise RunDirError(
            f"{log.path}: the checkpoint is at iteration {iteration} but the log lacks that iteration's "
            f"record{torn}; resuming would lose it"
        )


def _records(log: JsonlLog) -> list[dict]:
    try:
        return list(log.read())
    except ValueError as error:
        raise RunDirError(str(error)) from None
