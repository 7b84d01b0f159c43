"""The training loop shared by every method (see `espl.methods` for the switches).

One iteration: pick M prompts, run the same B problems under each with N samples; RL takes
one step on those trajectories (groups = (prompt, problem)); evolution plays one TrueSkill
match on the prompts' mean rewards and mutates (and sometimes crosses) the best prompt from
the same trajectories. The test split is evaluated every `eval_every` iterations.

Determinism: every random choice of iteration i draws from generators seeded by (seed, i),
so a run resumed from its checkpoint after iteration i repeats iteration i+1 exactly.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agents.engine import SamplingParams
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from agents.trajectory import Trajectory
from espl.run import builder as factory
from espl.files.atomic import readable_directory, staged_directory
from espl.run.budget import Budget
from espl.config import RunConfig
from espl.run.evaluation import evaluate
from espl.methods import MethodSpec, get_method
from espl.evolution.operators import CrossoverConfig, MutationConfig, ReflectorUsage, crossover, mutate
from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog, load_prompt_log
from espl.evolution.system_prompt import PromptLimits
from espl.evolution.rating import RatingSystem
from espl.run.run_dir import CHECKPOINT, LOOP_STATE, METRICS, PROMPTS, ROLLOUTS, RunDir
from espl.evolution.selection import choose_eval_prompt, make_strategy, select_prompts

DEFAULT_PRINCIPLES = (
    "Read the question carefully and work out what exactly is asked.",
    "Give the final answer in exactly the format the task asks for.",
)
Observer = Callable[[dict[str, Any]], None]


@dataclass
class LoopState:
    iteration: int = 0
    budget: Budget = field(default_factory=Budget)
    wall_s: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "budget": self.budget.to_dict(), "wall_s": self.wall_s, "evals": self.evals}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        return cls(int(data["iteration"]), Budget.from_dict(data["budget"]), float(data["wall_s"]), list(data["evals"]))


class TrainingLoop:
    def __init__(self, config: RunConfig, run_dir: RunDir, *, observer: Observer | None = None):
        self.config = config
        self.method: MethodSpec = get_method(config.method)
        self.run_dir = run_dir.create()
        self.observer = observer or (lambda record: None)
        self.state = LoopState()
        evolution = config.evolution
        self.policy = factory.build_policy(
            config, train=self.method.train_weights, adapter_dir=str(run_dir.file("adapters"))
        )
        tokenizer = self.policy.engine.tokenizer
        rollout = RolloutConfig(
            sampling=SamplingParams(
                temperature=config.policy.temperature, top_p=config.policy.top_p, max_tokens=config.policy.max_tokens
            ),
            placement=config.policy.placement,  # type: ignore[arg-type]
            max_total_tokens=config.policy.max_total_tokens,
        )
        self.train_driver = RolloutDriver(self.policy.engine, factory.env_factory(config, config.env.train_split, tokenizer), rollout)
        eval_rollout = RolloutConfig(
            sampling=SamplingParams(temperature=config.eval_temperature, top_p=config.policy.top_p, max_tokens=config.policy.max_tokens),
            placement=rollout.placement,
            max_total_tokens=rollout.max_total_tokens,
        )
        self.eval_driver = RolloutDriver(self.policy.engine, factory.env_factory(config, config.env.test_split, tokenizer), eval_rollout)
        self.train_tasks = self.train_driver.envs(1)[0].tasks
        self.test_tasks = self.eval_driver.envs(1)[0].tasks[: config.eval_limit]
        self.ratings = RatingSystem()
        capacity = 1 if self.method.single_lineage else evolution.capacity
        self.population = Population(capacity=capacity, window_size=evolution.window)
        self.strategy = make_strategy(evolution.selection)
        self.reflector = factory.build_reflector(evolution.reflector, self.policy, config.seed) if self.method.mutates else None
        limits = PromptLimits()
        self.mutation_config = MutationConfig(
            reflect_on_failures=evolution.reflect_on_failures,
            max_problems=evolution.max_problems,
            max_rollouts_per_problem=evolution.max_rollouts_per_problem,
            verbatim_words=evolution.verbatim_words,
            limits=limits,
        )
        self.crossover_config = CrossoverConfig(limits=limits)
        self._resume_or_start()

    # -- start / resume --------------------------------------------------------------------
    def _resume_or_start(self) -> None:
        checkpoint = readable_directory(self.run_dir.file(CHECKPOINT))
        loop_file = checkpoint / LOOP_STATE
        if loop_file.exists():
            import json

            self.state = LoopState.from_dict(json.loads(loop_file.read_text()))
            done = self.state.iteration
            for name in (METRICS, ROLLOUTS):
                self.run_dir.truncate_after(name, done)
            self.run_dir.truncate_after(PROMPTS, done, key="step")
            self.population = load_prompt_log(self.run_dir.file(PROMPTS), up_to_step=done)
            self.prompt_log = PromptLog.open(self.run_dir.file(PROMPTS))
            if self.policy.trainer is not None:
                from espl.rl.checkpoint import load_checkpoint

                load_checkpoint(self.policy.trainer, checkpoint / "trainer")
                self.policy.after_update()
            return
        for name in (METRICS, ROLLOUTS, PROMPTS):  # a start that died before its first checkpoint
            self.run_dir.file(name).unlink(missing_ok=True)
        self.prompt_log = PromptLog.open(self.run_dir.file(PROMPTS))
        principles = self.config.evolution.initial_principles or list(DEFAULT_PRINCIPLES)
        self.population.create(principles, step=0, rating=self.ratings.fresh())
        self.prompt_log.append_step(self.population, 0)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> LoopState:
        iterations = self.config.iterations if self.method.iterate else 0
        if self.state.iteration == 0 and not self.state.evals and self.config.eval_every > 0:
            self._initial_evaluation()
        while self.state.iteration < iterations and not self._budget_spent():
            started = time.perf_counter()
            i = self.state.iteration + 1
            record = self._iteration(i)
            if self.config.eval_every > 0 and (i % self.config.eval_every == 0 or i == iterations):
                record["eval"] = self._evaluate(i)
            self.state.iteration = i
            self.state.wall_s += time.perf_counter() - started
            record["budget"] = self.state.budget.to_dict()
            record["wall_s"] = self.state.wall_s
            self.run_dir.append(METRICS, [record])
            self.prompt_log.append_step(self.population, i)
            if i % self.config.checkpoint_every == 0 or i == iterations:
                self._checkpoint()
            self.observer(record)
        if not self.method.iterate and not self.state.evals:
            self._initial_evaluation()
        return self.state

    def _initial_evaluation(self) -> None:
        """Evaluate the starting policy (iteration 0 of the learning curve)."""
        started = time.perf_counter()
        metrics = self._evaluate(0)
        self.state.wall_s += time.perf_counter() - started
        record = {"iteration": 0, "eval": metrics, "budget": self.state.budget.to_dict(), "wall_s": self.state.wall_s}
        self.run_dir.append(METRICS, [record])
        self._checkpoint()

    def _budget_spent(self) -> bool:
        cap = self.config.max_rollouts
        return cap is not None and self.state.budget.train_rollouts >= cap

    def _iteration(self, i: int) -> dict[str, Any]:
        config, timings = self.config, {}
        rng = np.random.default_rng([config.seed, i])
        b = min(config.problems_per_iteration, len(self.train_tasks))
        problems = [self.train_tasks[j] for j in rng.choice(len(self.train_tasks), size=b, replace=False)]
        prompt_ids = self._select(rng)
        episodes = [
            Episode(task, self.population.get(pid).text, pid, slot * config.samples_per_problem + s)
            for slot, pid in enumerate(prompt_ids)
            for task in problems
            for s in range(config.samples_per_problem)
        ]
        started = time.perf_counter()
        trajectories = self.train_driver.run(episodes, self.policy.adapter, seed=_seed(config.seed, i, 0))
        timings["rollout_s"] = time.perf_counter() - started
        self.state.budget.add_rollouts(trajectories)
        self.run_dir.append(ROLLOUTS, [_rollout_record(t, i, "train") for t in trajectories])
        scores = _mean_rewards(trajectories)
        record: dict[str, Any] = {
            "iteration": i,
            "prompts": prompt_ids,
            "train_reward": sum(t.reward for t in trajectories) / max(len(trajectories), 1),
            "train_reward_per_prompt": scores,
            "rollouts": len(trajectories),
            "generated_tokens": sum(t.n_sampled for t in trajectories),
            "errors": sum(t.error is not None for t in trajectories),
        }
        evolve = self._evolve_async(i, prompt_ids, trajectories, scores, rng)
        if self.policy.trainer is not None:
            started = time.perf_counter()
            keys = [(t.prompt_id, t.task_id) for t in trajectories]
            record["train"] = self.policy.trainer.step(trajectories, keys)
            self.policy.after_update()
            self.state.budget.optimizer_steps += 0 if record["train"].get("skipped") else 1
            timings["update_s"] = time.perf_counter() - started
        started = time.perf_counter()
        record["evolution"] = evolve()
        timings["evolve_s"] = time.perf_counter() - started
        record["timings"] = timings
        return record

    def _select(self, rng: np.random.Generator) -> list[str]:
        m = self.config.evolution.prompts_per_iteration
        if not self.method.evolve:
            return [self.population.newest.id] * m
        window = self.population.window()
        return select_prompts(self.strategy, window, self.population.ratings(window), m, rng)

    # -- evolution -------------------------------------------------------------------------
    def _evolve_async(self, i, prompt_ids, trajectories, scores, rng) -> Callable[[], dict[str, Any]]:
        """Start evolution; run it concurrently with the update when it does not share the model."""
        crossover_draw = float(rng.random())
        work = lambda: self._evolve(i, prompt_ids, trajectories, scores, crossover_draw)  # noqa: E731
        if self.reflector is None or not factory.reflector_is_separate(self.config.evolution.reflector):
            return work  # the reflector shares the model the trainer changes: run after the update
        pool = ThreadPoolExecutor(max_workers=1)
        future = pool.submit(work)
        pool.shutdown(wait=False)
        return future.result

    def _evolve(self, i, prompt_ids, trajectories, scores, crossover_draw) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not self.method.mutates:
            return out
        unique = list(dict.fromkeys(prompt_ids))
        if self.method.evolve:
            outcome = self.ratings.play({pid: scores[pid] for pid in unique}, self.population.ratings(unique))
            if outcome.played:
                self.population.record_ratings(i, outcome.after)
            out["match"] = {"ranks": outcome.ranks, "played": outcome.played}
        best = max(unique, key=lambda pid: (scores[pid], -unique.index(pid)))
        # Fresh usage and a seed of this iteration: a resumed run reflects exactly the same way.
        self.reflector.usage = ReflectorUsage()
        self.reflector.sampling = replace(self.reflector.sampling, seed=_seed(self.config.seed, i, 2))
        ratings = self.ratings if self.method.evolve else None
        result = mutate(
            self.population.get(best), trajectories, self.reflector, step=i, new_id=self.population.new_id,
            config=self.mutation_config, ratings=ratings,
        )
        out["mutation"] = result.to_record()
        if result.child is not None:
            self.population.add(result.child)
        p = self.config.evolution.crossover_probability
        if self.method.crossover and len(unique) > 1 and crossover_draw < p:
            result = crossover(
                [self.population.get(pid) for pid in unique], trajectories, self.reflector, step=i,
                new_id=self.population.new_id, scores=scores, config=self.crossover_config, ratings=ratings,
            )
            out["crossover"] = result.to_record()
            if result.child is not None:
                self.population.add(result.child)
        usage = self.reflector.usage
        self.state.budget.add_reflector(usage.calls, usage.prompt_tokens, usage.completion_tokens)
        return out

    # -- evaluation and checkpoints --------------------------------------------------------
    def eval_prompt_id(self) -> str:
        members = self.population.member_ids
        rule = self.config.evolution.eval_prompt if self.method.evolve else "newest"
        return choose_eval_prompt(members, self.population.ratings(members), rule)  # type: ignore[arg-type]

    def _evaluate(self, i: int) -> dict[str, Any]:
        started = time.perf_counter()
        prompt = self.population.get(self.eval_prompt_id())
        result = evaluate(
            self.eval_driver, self.test_tasks, n_samples=self.config.eval_samples, system_prompt=prompt.text,
            prompt_id=prompt.id, adapter=self.policy.adapter, seed=_seed(self.config.seed, i, 1),
        )
        self.state.budget.add_rollouts(result.trajectories, evaluation=True)
        self.run_dir.append(ROLLOUTS, [_rollout_record(t, i, "eval") for t in result.trajectories])
        metrics = {"iteration": i, "prompt_id": prompt.id, **result.metrics, "eval_s": time.perf_counter() - started}
        self.state.evals.append(metrics)
        return metrics

    def _checkpoint(self) -> None:
        """Trainer and loop state in one folder swapped in at once: a resume never pairs the
        trainer of one iteration with the loop state of another."""
        import json

        with staged_directory(self.run_dir.file(CHECKPOINT)) as staging:
            if self.policy.trainer is not None:
                from espl.rl.checkpoint import save_checkpoint

                save_checkpoint(self.policy.trainer, staging / "trainer")
            (staging / LOOP_STATE).write_text(json.dumps(self.state.to_dict(), indent=2))


def _seed(seed: int, iteration: int, phase: int) -> int:
    return int(np.random.SeedSequence([seed, iteration, phase]).generate_state(1)[0])


def _mean_rewards(trajectories: Sequence[Trajectory]) -> dict[str, float]:
    sums: dict[str, list[float]] = defaultdict(list)
    for t in trajectories:
        sums[t.prompt_id or ""].append(t.reward)
    return {pid: sum(v) / len(v) for pid, v in sums.items()}


def _rollout_record(trajectory: Trajectory, iteration: int, phase: str) -> dict[str, Any]:
    return {"iteration": iteration, "phase": phase, **trajectory.to_record()}
