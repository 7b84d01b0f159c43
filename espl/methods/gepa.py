"""The `gepa` method: `gepa.optimize` over our envs and engines, recorded like any other method.

Weights stay frozen. GEPA evolves one component, the system prompt, starting from the loop's
seed principles; its reflection model is our reflector (`evolution.reflector`, by default the
policy's base weights). It gets the training-rollout budget `evolution` would spend on the
same config (see `espl.gepa.settings`), and the run directory holds what every method's does:
`metrics.jsonl` (one line per budget window, test evaluations with GEPA's current best
candidate), `rollouts.jsonl`, `prompts.jsonl` (GEPA's candidates and lineage) and
`summary.json` from `espl.run.summary.build_summary`.

A GEPA run does not resume: started again in the same directory, it starts over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from agents.engine import SamplingParams
from agents.rollout import RolloutConfig, RolloutDriver
from espl.run import builder as factory
from espl.config import RunConfig
from espl.run.evaluation import evaluate
from espl.gepa.adapter import COMPONENT, RolloutAdapter
from espl.gepa.recorder import RunRecorder
from espl.gepa.reflection import ReflectionLM
from espl.gepa.settings import (
    GEPASettings,
    budget_iterations,
    rollouts_per_iteration,
    split_train_tasks,
)
from espl.run.loop import DEFAULT_PRINCIPLES, LoopState
from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog
from espl.evolution.system_prompt import SystemPrompt
from espl.run.run_dir import CHECKPOINT, LOOP_STATE, METRICS, PROMPTS, ROLLOUTS, RunDir
from espl.run.summary import build_summary, write_summary

log = logging.getLogger(__name__)


class _GEPALog:
    """GEPA's `LoggerProtocol` on the standard logging module (it prints otherwise)."""

    def log(self, message: str) -> None:
        log.info("%s", message)


def run_gepa(
    config: RunConfig,
    run_dir: RunDir,
    *,
    observer: Callable[[dict[str, Any]], None] | None = None,
    status: Callable[[str], None] | None = None,
    settings: GEPASettings | None = None,
) -> dict[str, Any]:
    """Optimize the system prompt with GEPA in `run_dir` and return the summary written there."""
    import gepa

    settings = settings or GEPASettings()
    say = status or (lambda text: None)
    run_dir.create()
    for name in (METRICS, ROLLOUTS, PROMPTS, f"{CHECKPOINT}/{LOOP_STATE}"):
        run_dir.file(name).unlink(missing_ok=True)

    say("loading the model and the environment")
    policy = factory.build_policy(config, train=False, adapter_dir=str(run_dir.file("adapters")))
    train_driver, eval_driver = _drivers(config, policy.engine)
    train_tasks = train_driver.envs(1)[0].tasks
    test_tasks = eval_driver.envs(1)[0].tasks[: config.eval_limit]
    window = rollouts_per_iteration(config, len(train_tasks))
    windows = budget_iterations(config, len(train_tasks))
    budget = window * windows
    trainset, valset = split_train_tasks(train_tasks, settings.valset_size_for(budget, len(train_tasks)), config.seed)

    state = LoopState()
    population = Population(capacity=budget + 1, window_size=config.evolution.window)
    prompt_log = PromptLog.open(run_dir.file(PROMPTS))
    seed_prompt = population.create(config.evolution.initial_principles or list(DEFAULT_PRINCIPLES), step=0)
    prompt_log.append_step(population, 0)

    def evaluate_prompt(iteration: int, prompt: SystemPrompt) -> dict[str, Any]:
        started = time.perf_counter()
        result = evaluate(
            eval_driver, test_tasks, n_samples=config.eval_samples, system_prompt=prompt.text, prompt_id=prompt.id,
            adapter=policy.adapter, seed=_seed(config.seed, iteration, 1),
        )
        state.budget.add_rollouts(result.trajectories, evaluation=True)
        run_dir.append(ROLLOUTS, [{"iteration": iteration, "phase": "eval", **t.to_record()} for t in result.trajectories])
        metrics = {"iteration": iteration, "prompt_id": prompt.id, **result.metrics, "eval_s": time.perf_counter() - started}
        state.evals.append(metrics)
        return metrics

    if config.eval_every > 0:
        run_dir.append(METRICS, [{"iteration": 0, "eval": evaluate_prompt(0, seed_prompt), "budget": state.budget.to_dict()}])

    reflector = factory.build_reflector(config.evolution.reflector, policy, config.seed)
    reflection_lm = ReflectionLM(reflector)
    recorder = RunRecorder(
        run_dir, state, population, prompt_log, seed_prompt, window=max(window, 1), windows=windows,
        eval_every=config.eval_every, evaluate=evaluate_prompt, reflection_usage=lambda: reflector.usage,
        observer=observer,
    )
    adapter = RolloutAdapter(
        train_driver, recorder, seed=config.seed, engine_adapter=policy.adapter, prompt_id_of=recorder.prompt_id_of
    )
    result = None
    if budget > 0:
        say("running GEPA")
        result = gepa.optimize(
            seed_candidate={COMPONENT: seed_prompt.text},
            trainset=trainset,
            valset=valset,
            adapter=adapter,
            reflection_lm=reflection_lm,
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
            raise_on_exception=False,  # an exhausted budget ends an iteration; other errors: see below
        )
        recorder.raise_errors()
    best = recorder.finish(result.best_idx if result is not None else None)
    _save_state(run_dir, state)

    summary = build_summary(config, state, population, best.id)
    summary["eval_prompt"]["text"] = best.text
    summary["gepa"] = {
        "settings": settings.to_dict(),
        "train_rollout_budget": budget,
        "trainset_size": len(trainset),
        "valset_size": len(valset),
        "iterations": recorder.gepa_iterations,
        "candidates": len(recorder.ids),
        "best_val_score": recorder.val_scores.get(result.best_idx) if result is not None else None,
        "metric_calls": result.total_metric_calls if result is not None else 0,
    }
    write_summary(run_dir, summary)
    return summary


def _drivers(config: RunConfig, engine: Any) -> tuple[RolloutDriver, RolloutDriver]:
    """Train and test drivers built exactly as the shared loop builds them."""
    policy = config.policy
    placement: Any = policy.placement
    train = RolloutConfig(
        sampling=SamplingParams(temperature=policy.temperature, top_p=policy.top_p, max_tokens=policy.max_tokens),
        placement=placement,
        max_total_tokens=policy.max_total_tokens,
    )
    test = RolloutConfig(
        sampling=SamplingParams(temperature=config.eval_temperature, top_p=policy.top_p, max_tokens=policy.max_tokens),
        placement=placement,
        max_total_tokens=policy.max_total_tokens,
    )
    tokenizer = engine.tokenizer
    return (
        RolloutDriver(engine, factory.env_factory(config, config.env.train_split, tokenizer), train),
        RolloutDriver(engine, factory.env_factory(config, config.env.test_split, tokenizer), test),
    )


def _seed(seed: int, iteration: int, phase: int) -> int:
    """The shared loop's derivation, so every method evaluates iteration i with the same noise."""
    return int(np.random.SeedSequence([seed, iteration, phase]).generate_state(1)[0])


def _save_state(run_dir: RunDir, state: LoopState) -> None:
    directory = run_dir.file(CHECKPOINT)
    directory.mkdir(parents=True, exist_ok=True)
    run_dir.write_json(f"{CHECKPOINT}/{LOOP_STATE}", state.to_dict())
