"""Run one configured method end to end: build its run, let it spend the budget, write the summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from espl.config import RunConfig
from espl.run.extension import extensions
from espl.run.ranks import Followers
from espl.run.run_dir import METRICS, RunDir
from espl.run.learning_curve import LEARNING_CURVE, write_learning_curve
from espl.run.summary import build_summary, write_summary


def run_training(
    config: RunConfig,
    run_dir: RunDir,
    *,
    observer: Callable[[dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
    followers: Followers | None = None,
) -> dict[str, Any]:
    """Train (or resume) in `run_dir` and return the summary written to `summary.json`; under
    `torchrun` this is rank 0's part, and `followers` are the ranks that train with it."""
    from espl.methods import get_method
    from espl.run.builder import build_run

    say = status or (lambda text: None)
    method = get_method(config.method)
    say("loading the model and the environment")
    run = build_run(config, run_dir, method, observer=observer, followers=followers)
    say("running")
    try:
        result = method.run(run)
    finally:
        run.close()
    records = list(run.run_dir.read(METRICS))
    precision = run.plan.precision
    summary = build_summary(config, run.state, result.population, result.eval_prompt.id, records,
                            precision=None if precision is None else precision.to_dict(),
                            partial_credit=run.plan.partial_credit)
    for key, value in result.summary.items():
        if isinstance(value, dict) and isinstance(summary.get(key), dict):
            summary[key].update(value)
        else:
            summary[key] = value
    if extensions(run_dir):
        summary["extended"] = extensions(run_dir)
    write_summary(run_dir, summary)
    write_learning_curve(run_dir.file(LEARNING_CURVE), records, f"{config.method} on {config.env.name}")
    return summary
