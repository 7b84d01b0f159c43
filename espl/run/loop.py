"""The iteration loop every iterative method runs (see `espl.methods` for the methods).

One iteration: draw B problems, let the method pick the prompts of its M slots, run the same
problems under each slot with N samples, hand the batch to the method to learn from (an RL
step, an evolution step, or both), evaluate the test split every `eval_every` iterations,
write the records and a checkpoint. The loop never asks which method it runs.

Determinism: every random choice of iteration i draws from generators seeded by (seed, i)
(`espl.run.phases`), so a run resumed from its checkpoint after iteration i repeats
iteration i+1 exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agents.rollout import Episode
from agents.trajectory import Trajectory
from envs.base import Task
from espl.evolution.population import Population
from espl.evolution.scores import prompt_scores, scored_reward
from espl.run.context import LoopState, Run
from espl.run.phases import iteration_rng


@dataclass
class IterationBatch:
    """What one iteration ran: the slots' prompts, the problems, and every trajectory."""

    iteration: int
    prompt_ids: list[str]
    """One prompt id per slot (a prompt may fill several slots)."""
    problems: list[Task]
    trajectories: list[Trajectory]
    """Slot-major, then problem, then sample."""
    rng: np.random.Generator
    """The iteration's generator, after the problems and the prompts were drawn."""
    samples_per_problem: int = 1

    @property
    def slots(self) -> list[int]:
        """The slot of each trajectory (they come slot-major: B problems x N samples per slot)."""
        per_slot = max(len(self.problems) * self.samples_per_problem, 1)
        return [index // per_slot for index in range(len(self.trajectories))]

    @property
    def scores(self) -> dict[str, float]:
        """Each prompt's score this iteration (`espl.evolution.scores.prompt_scores`)."""
        return prompt_scores(self.trajectories)

    @property
    def group_keys(self) -> list[tuple[int, str]]:
        """The RL group of each trajectory: its slot's N samples of one problem.

        Keyed by slot, not by prompt: a prompt that fills several slots (every slot under
        `rl`, a prompt drawn twice under `espl`) gives one group of N per slot, as E-SPL's
        reference does, so the RL-only baseline gets no larger groups than E-SPL."""
        return [(slot, t.task_id) for slot, t in zip(self.slots, self.trajectories)]


class IterativeMethod(Protocol):
    """What the loop needs from a method: a population, a choice of prompts, a learning step."""

    population: Population

    def select(self, iteration: int, rng: np.random.Generator) -> list[str]:
        """The prompt id of each of the M slots."""
        ...

    def learn(self, batch: IterationBatch) -> dict[str, Any]:
        """Learn from the batch; returns the entries of the iteration's metrics record."""
        ...


class IterationLoop:
    def __init__(self, run: Run, method: IterativeMethod) -> None:
        self.run = run
        self.method = method

    @property
    def state(self) -> LoopState:
        return self.run.state

    def run_iterations(self) -> LoopState:
        """Evaluate the start (when evaluating at all), then iterate to the budget."""
        config = self.run.config
        if self.state.iteration == 0 and not self.state.evals and config.eval_every > 0:
            self.evaluate_start()
        while self.state.iteration < config.iterations and not self._budget_spent():
            started = time.perf_counter()
            i = self.state.iteration + 1
            record = self._iteration(i)
            if config.eval_every > 0 and (i % config.eval_every == 0 or i == config.iterations):
                record["eval"] = self.run.evaluate(self.run.eval_prompt(self.method.population), i)
            self.state.iteration = i
            self.state.wall_s += time.perf_counter() - started
            self.run.record_iteration(record, self.method.population)
            if i % config.checkpoint_every == 0 or i == config.iterations:
                self.run.checkpoint()
        return self.state

    def evaluate_start(self) -> None:
        """Evaluate the starting policy (iteration 0 of the learning curve)."""
        started = time.perf_counter()
        metrics = self.run.evaluate(self.run.eval_prompt(self.method.population), 0)
        self.state.wall_s += time.perf_counter() - started
        record = {"iteration": 0, "eval": metrics, "budget": self.state.budget.to_dict(), "wall_s": self.state.wall_s}
        self.run.record_metrics(record, self.method.population)
        self.run.checkpoint()

    def _budget_spent(self) -> bool:
        cap = self.run.config.max_rollouts
        return cap is not None and self.state.budget.train_rollouts >= cap

    def _iteration(self, i: int) -> dict[str, Any]:
        config, run = self.run.config, self.run
        rng = iteration_rng(config.seed, i)
        b = min(config.problems_per_iteration, len(run.train_tasks))
        problems = [run.train_tasks[j] for j in rng.choice(len(run.train_tasks), size=b, replace=False)]
        prompt_ids = self.method.select(i, rng)
        population = self.method.population
        episodes = [
            Episode(task, population.get(pid).text, pid, slot * config.samples_per_problem + s)
            for slot, pid in enumerate(prompt_ids)
            for task in problems
            for s in range(config.samples_per_problem)
        ]
        started = time.perf_counter()
        trajectories = run.train_rollouts(episodes, i)
        rollout_s = time.perf_counter() - started
        batch = IterationBatch(i, list(prompt_ids), problems, trajectories, rng, config.samples_per_problem)
        record: dict[str, Any] = {
            "iteration": i,
            "prompts": list(prompt_ids),
            "train_reward": sum(map(scored_reward, trajectories)) / max(len(trajectories), 1),
            "train_reward_per_prompt": batch.scores,
            "rollouts": len(trajectories),
            "generated_tokens": sum(t.n_sampled for t in trajectories),
            "errors": sum(t.error is not None for t in trajectories),
        }
        learned = self.method.learn(batch)
        record.update({k: v for k, v in learned.items() if k != "timings"})
        record["timings"] = {"rollout_s": rollout_s, **learned.get("timings", {})}
        return record

