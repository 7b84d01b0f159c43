"""GEPA: `gepa.optimize` evolving the system prompt over our envs and engines, frozen weights.

GEPA evolves one component, the system prompt, starting from the run's seed principles; its
reflection model is the run's reflector (by default the policy's base weights). It gets the
training-rollout budget `evolution` would spend on the same config (`espl.gepa.settings`),
and records through the run like every method: `metrics.jsonl` (one line per budget window,
test evaluations of GEPA's current best candidate), `rollouts.jsonl`, `prompts.jsonl` (GEPA's
candidates and lineage). The pieces are in `espl.gepa`.

A GEPA run does not resume: its optimizer state lives inside the `gepa` package.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from espl.gepa.settings import GEPASettings, budget_iterations, rollouts_per_iteration, split_train_tasks
from espl.methods.protocol import MethodResult
from espl.run import builder

if TYPE_CHECKING:
    from espl.run.context import Run

log = logging.getLogger(__name__)


class _GEPALog:
    """GEPA's `LoggerProtocol` on the standard logging module (it prints otherwise)."""

    def log(self, message: str) -> None:
        log.info("%s", message)


class GEPA:
    name = "gepa"
    description = "GEPA reflective Pareto prompt optimization (the gepa package), frozen weights"
    trains_weights = False

    def __init__(self, settings: GEPASettings | None = None) -> None:
        self.settings = settings or GEPASettings()

    def run(self, run: Run) -> MethodResult:
        import gepa

        from espl.gepa.adapter import COMPONENT, RolloutAdapter
        from espl.gepa.recorder import RunRecorder
        from espl.gepa.reflection import ReflectionLM

        if run.resumed:
            raise builder.RunDirError(
                f"{run.run_dir.path}: a GEPA run cannot be resumed (its optimizer state lives in the gepa "
                "package); start it in a new run directory"
            )
        config, settings = run.config, self.settings
        window = rollouts_per_iteration(config, len(run.train_tasks))
        windows = budget_iterations(config, len(run.train_tasks))
        budget = window * windows
        valset_size = settings.valset_size_for(budget, len(run.train_tasks))
        trainset, valset = split_train_tasks(run.train_tasks, valset_size, config.seed)

        population = run.start_population(capacity=budget + 1, rated=False)
        seed_prompt = population.newest
        if config.eval_every > 0:
            run.record_metrics({"iteration": 0, "eval": run.evaluate(seed_prompt, 0), "budget": run.state.budget.to_dict()},
                               population)
        reflector = builder.build_reflector(run)
        recorder = RunRecorder(
            run, population, seed_prompt, window=max(window, 1), windows=windows, eval_every=config.eval_every,
            evaluate=lambda iteration, prompt: run.evaluate(prompt, iteration), reflection_usage=lambda: reflector.usage,
        )
        adapter = RolloutAdapter(
            run.train_driver, recorder, seed=config.seed, engine_adapter=run.policy.adapter,
            prompt_id_of=recorder.prompt_id_of,
        )
        result = None
        if budget > 0:
            result = gepa.optimize(
                seed_candidate={COMPONENT: seed_prompt.text},
                trainset=trainset,
                valset=valset,
                adapter=adapter,
                reflection_lm=ReflectionLM(reflector),
                candidate_selection_strategy=settings.candidate_selection,  # type: ignore[arg-type]
                frontier_type=settings.frontier_type,  # type: ignore[arg-type]
                skip_perfect_score=settings.skip_perfect_score,
                reflection_minibatch_size=settings.minibatch_size,
                use_merge=settings.use_merge,
                max_merge_invocations=settings.max_merge_invocations,
                acceptance_criterion=settings.acceptance,  # type: ignore[arg-type]
                max_metric_calls=budget,
                stop_callbacks=[recorder.should_stop],
                callbacks=[recorder],
                logger=_GEPALog(),
                track_best_outputs=False,
                seed=config.seed,
                raise_on_exception=False,  # an exhausted budget ends an iteration; other errors: below
            )
            recorder.raise_errors()
        best = recorder.finish(result.best_idx if result is not None else None)
        run.checkpoint()
        summary: dict[str, Any] = {
            "eval_prompt": {"text": best.text},
            "gepa": {
                "settings": settings.to_dict(),
                "train_rollout_budget": budget,
                "trainset_size": len(trainset),
                "valset_size": len(valset),
                "iterations": recorder.gepa_iterations,
                "candidates": len(recorder.ids),
                "best_val_score": recorder.val_scores.get(result.best_idx) if result is not None else None,
                "metric_calls": result.total_metric_calls if result is not None else 0,
            },
        }
        return MethodResult(population, best, summary)
