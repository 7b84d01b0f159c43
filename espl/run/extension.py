"""Extending a run to more iterations: `espl-bench run --resume DIR --iterations N`.

An extended run continues from its checkpoint exactly as a resume does, and is the run that
`--iterations N` would have made from the start: every random choice of iteration i is
seeded by (seed, i) (`espl.run.phases`), the trainer's learning rate is constant and its
state (optimizer moments, RNGs, EMA anchor) is checkpointed, and the evolution's population
and ratings replay from the prompt log. Nothing the loop does depends on the total count
except two things a shorter run did at its last iteration, which an extension keeps:

- its test evaluation there, when `eval_every` does not divide that iteration (a straight
  run would not have evaluated it): one more point on the learning curve, counted in the
  eval budget;
- its checkpoint there (harmless: saving changes nothing).

Refused: shortening a run; methods that do not iterate (`base`) or cannot resume (`gepa`,
whose budget is also cut from `iterations` up front); a run that stopped because it spent
`max_rollouts` (more iterations would run nothing). Each extension is appended to
`extensions.jsonl` before the run continues, and `summary.json` lists them under `extended`.
The shorter run's summary is kept as `summary-at-<iterations>.json` (the extended run writes
a new `summary.json` when it ends; until then the run is unfinished, as it is).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from espl.config import ConfigError, RunConfig
from espl.files.atomic import readable_directory
from espl.run.resume import RunDirError
from espl.run.run_dir import CHECKPOINT, CONFIG, LOOP_STATE, SUMMARY, RunDir

EXTENSIONS = "extensions.jsonl"
NOT_EXTENDABLE = {"base": "it runs no iterations", "gepa": "a GEPA run cannot be resumed, and its budget is fixed up front"}


@dataclass(frozen=True)
class Extension:
    """What `--iterations` asks of a run directory."""

    before: int
    """The iterations the run was configured for."""
    after: int
    done: int
    """Iterations completed (the checkpoint's)."""
    budget_spent: bool = False
    """The run stopped at its `max_rollouts` budget."""

    @property
    def nothing_to_do(self) -> bool:
        return self.after == self.before and (self.done >= self.after or self.budget_spent)


def plan_extension(run_dir: RunDir, config: RunConfig, iterations: int) -> Extension:
    """Check that the run in `run_dir` (whose config is `config`, the iteration count aside)
    may go on to `iterations` in all; changes nothing on disk."""
    before = int(run_dir.read_json(CONFIG)["iterations"])
    done, train_rollouts = _progress(run_dir)
    if iterations < before:
        raise ConfigError(f"--iterations {iterations}: {run_dir.path} is configured for {before} "
                          f"iterations ({done} done); a run is extended, never shortened")
    spent = config.max_rollouts is not None and train_rollouts >= config.max_rollouts
    extension = Extension(before, iterations, done, spent)
    if iterations == before:
        return extension
    if config.method in NOT_EXTENDABLE:
        raise ConfigError(f"a {config.method} run cannot be extended: {NOT_EXTENDABLE[config.method]}")
    if spent:
        raise ConfigError(f"{run_dir.path} stopped at its budget of {config.max_rollouts} training rollouts "
                          f"(max_rollouts) after {done} iterations: more iterations would run nothing")
    return extension


def apply_extension(run_dir: RunDir, config: RunConfig, extension: Extension) -> RunConfig:
    """Record the extension and rewrite `config.json` for the new count; returns that config.

    The record comes first: a run killed in between has its extension on file, and the next
    `--resume ... --iterations N` (same N) finds `config.json` unchanged and writes it then."""
    extended = dataclasses.replace(config, iterations=extension.after)
    if extension.after == extension.before:
        return extended
    log = run_dir.log(EXTENSIONS)
    if not any(record.get("to") == extension.after for record in log.read()):
        log.append([{"from": extension.before, "to": extension.after, "after_iteration": extension.done,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}])
    summary = run_dir.file(SUMMARY)
    if summary.exists():
        os.replace(summary, run_dir.file(f"summary-at-{extension.before}.json"))
    run_dir.write_json(CONFIG, extended.to_dict())
    return extended


def extensions(run_dir: RunDir) -> list[dict[str, Any]]:
    """The run's extensions, oldest first (empty for a run never extended)."""
    return list(run_dir.read(EXTENSIONS)) if run_dir.file(EXTENSIONS).exists() else []


def _progress(run_dir: RunDir) -> tuple[int, int]:
    """(iterations completed, training rollouts spent) by the checkpoint; (0, 0) without one."""
    loop_file = readable_directory(run_dir.file(CHECKPOINT)) / LOOP_STATE
    if not loop_file.exists():
        return 0, 0
    try:
        state = json.loads(loop_file.read_text())
        return int(state["iteration"]), int(state["budget"].get("train_rollouts", 0))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise RunDirError(f"{loop_file}: unreadable loop state ({type(error).__name__}: {error})") from None
