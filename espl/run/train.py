"""Run one configured method end to end: build the loop, run it, write the summary."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import Any

from espl.config import RunConfig
from espl.run.run_dir import RunDir
from espl.run.summary import build_summary, write_summary


def run_training(
    config: RunConfig,
    run_dir: RunDir,
    *,
    observer: Callable[[dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) in `run_dir` and return the summary written to `summary.json`."""
    from espl.run.loop import TrainingLoop
    from espl.methods import get_method

    own_runner = get_method(config.method).runner
    if own_runner is not None:
        module, _, function = own_runner.partition(":")
        return getattr(import_module(module), function)(config, run_dir, observer=observer, status=status)

    if status is not None:
        status("loading the model and the environment")
    loop = TrainingLoop(config, run_dir, observer=observer)
    if status is not None:
        status("running")
    state = loop.run()
    summary = build_summary(config, state, loop.population, loop.eval_prompt_id())
    write_summary(run_dir, summary)
    return summary
