"""`summary.json`: one run's leaderboard row and how it was obtained."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from espl.config import RunConfig
from espl.run.activity import activity
from espl.run.provenance import git_commit, hardware
from espl.run.run_dir import SUMMARY, RunDir


def build_summary(
    config: RunConfig, state: Any, population: Any, eval_prompt_id: str, records: Iterable[Mapping[str, Any]] = (),
    precision: Mapping[str, Any] | None = None, partial_credit: str | None = None,
) -> dict[str, Any]:
    """The run's row; `records` (its metrics lines) give the `activity` block, `precision` the
    policy's device and dtype as resolved on this machine (None: the engine's servers chose),
    `partial_credit` what a near miss scored in training (None: the env's own reward)."""
    evals = list(state.evals)
    final = evals[-1] if evals else {}
    best = max(evals, key=lambda e: e.get("accuracy", 0.0)) if evals else {}
    prompt = population.get(eval_prompt_id)
    return {
        "env": config.env.name,
        "method": config.method,
        "model": config.policy.model,
        "engine": config.policy.engine,
        "seed": config.seed,
        "iterations": state.iteration,
        "budget": state.budget.to_dict(),
        "wall_s": round(state.wall_s, 2),
        "hardware": hardware(),
        "precision": None if precision is None else dict(precision),
        "git_commit": git_commit(),
        "final": {k: v for k, v in final.items() if k != "prompt_id"},
        "best": {k: v for k, v in best.items() if k != "prompt_id"},
        "eval_prompt": {"id": prompt.id, "principles": list(prompt.principles), "operator": prompt.operator,
                        "parents": list(prompt.parents)},
        "population_size": len(population),
        "prompts_created": len(population.archive()),
        "partial_credit": partial_credit,
        "activity": activity(records, population),
    }


def write_summary(run_dir: RunDir, summary: dict[str, Any]) -> None:
    run_dir.write_json(SUMMARY, summary)
