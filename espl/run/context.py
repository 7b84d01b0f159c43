"""A run in progress: what every method spends its budget with, and where it all is recorded.

`espl.run.builder.build_run` makes a `Run` from a config and a run directory (fresh or
resumed). Methods take their parts from it (the policy, the drivers, the population, the
reflector) and record through it, so every method writes the same run directory the same
way: rollouts tagged with iteration and phase, one metrics line per iteration, the prompt
log, the budget in one set of units, and a checkpoint that swaps trainer and loop state in
at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents.devices import Precision
from agents.engine import Adapter, Engine, Sleeper
from agents.rollout import Episode, RolloutDriver
from agents.trajectory import Trajectory
from envs.base import Task
from espl.evolution.population import Population
from espl.evolution.prompt_log import PromptLog, load_prompt_log
from espl.evolution.rating import RatingSystem
from espl.evolution.selection import choose_eval_prompt
from espl.evolution.system_prompt import SystemPrompt
from espl.files.atomic import staged_directory
from espl.run.budget import Budget
from espl.run.on_policy import CURRENT_SHARE, current_adapter_share
from espl.run.evaluation import evaluate
from espl.run.phases import Phase, phase_seed
from espl.run.run_dir import CHECKPOINT, LOOP_STATE, METRICS, PROMPTS, ROLLOUTS, RunDir

if TYPE_CHECKING:
    from espl.config import RunConfig
    from espl.run.ranks import Followers
    from espl.tracking import TrackerFeed

Observer = Callable[[dict[str, Any]], None]
DEFAULT_PRINCIPLES = (
    "Read the question carefully and work out what exactly is asked.",
    "Give the final answer in exactly the format the task asks for.",
)
TRAINER_CHECKPOINT = "trainer"


@dataclass
class LoopState:
    """Where a run stands: completed iterations, budget spent, wall time, evaluations so far,
    and the precision the run started in (`espl.run.kept_precision`; None: a run without a
    model of its own, or one checkpointed before runs recorded it)."""

    iteration: int = 0
    budget: Budget = field(default_factory=Budget)
    wall_s: float = 0.0
    evals: list[dict[str, Any]] = field(default_factory=list)
    precision: Precision | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "budget": self.budget.to_dict(), "wall_s": self.wall_s, "evals": self.evals,
                "precision": None if self.precision is None else self.precision.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoopState:
        recorded = data.get("precision")
        return cls(int(data["iteration"]), Budget.from_dict(data["budget"]), float(data["wall_s"]), list(data["evals"]),
                   None if recorded is None else Precision.from_dict(recorded))


@dataclass
class Policy:
    """The policy engine plus, when the method trains, the trainer and the adapter to sample with."""

    engine: Engine
    trainer: Any = None
    adapter: Adapter | None = None
    followers: Followers | None = None
    """Under `torchrun`: the other ranks, sent each batch to train on with this one."""

    def after_update(self) -> None:
        """Point sampling at the weights the trainer just produced (the engine says how)."""
        if self.trainer is not None:
            self.adapter = self.engine.adapter_from(self.trainer)

    def update(self, trajectories: Sequence[Trajectory], group_keys: Sequence[Any]) -> dict[str, float]:
        """One trainer step on the trajectories, then the engine takes the new adapter. An
        engine built to sleep gives its GPU memory to the trainer for the step and takes it
        back after (even when the step fails), before the new adapter is handed over."""
        current = current_adapter_share(trajectories, self.adapter)  # raises if a turn was stale
        sleeper = self.engine if isinstance(self.engine, Sleeper) and self.engine.can_sleep else None
        if sleeper is not None:
            sleeper.sleep()
        try:
            if self.followers is not None:
                self.followers.step(trajectories, group_keys)
            stats = self.trainer.step(trajectories, group_keys)
        finally:
            if sleeper is not None:
                sleeper.wake()
        if current is not None:
            stats[CURRENT_SHARE] = current
        self.after_update()
        return stats


class RunRecords:
    """A run directory's records: rollouts, metrics lines, the prompt log, the checkpoint."""

    def __init__(self, run_dir: RunDir, state: LoopState, *, observer: Observer | None = None) -> None:
        self.run_dir = run_dir
        self.state = state
        self.observer = observer or (lambda record: None)
        self.prompt_log = PromptLog.open(run_dir.file(PROMPTS))
        self.tracker: TrackerFeed | None = None
        """The experiment trackers each metrics line also goes to (`report_to`); None: tracking off."""

    def record_rollouts(self, trajectories: Sequence[Trajectory], iteration: int, phase: str) -> None:
        """Count rollouts in the budget and append them, tagged with iteration and phase."""
        self.state.budget.add_rollouts(trajectories, evaluation=phase == "eval")
        self.run_dir.append(ROLLOUTS, [{"iteration": iteration, "phase": phase, **t.to_record()} for t in trajectories])

    def record_iteration(self, record: dict[str, Any], population: Population) -> None:
        """Close an iteration: budget and wall time into its metrics line, the prompt log's step."""
        record["budget"] = self.state.budget.to_dict()
        record["wall_s"] = self.state.wall_s
        self.run_dir.append(METRICS, [record])
        self.prompt_log.append_step(population, int(record["iteration"]))
        if self.tracker is not None:
            self.tracker.record(record, population)
        self.observer(record)

    def record_metrics(self, record: dict[str, Any], population: Population | None = None) -> None:
        """A metrics line that is not an iteration's close (the starting policy's evaluation);
        observed too, so a log shows the starting accuracy before the first iteration ends, and
        `population` (the one evaluated from) goes to the trackers with it."""
        self.run_dir.append(METRICS, [record])
        if self.tracker is not None:
            self.tracker.record(record, population)
        self.observer(record)

    def checkpoint(self, trainer: Any = None) -> None:
        """Trainer and loop state in one folder swapped in at once: a resume never pairs the
        trainer of one iteration with the loop state of another."""
        with staged_directory(self.run_dir.file(CHECKPOINT)) as staging:
            if trainer is not None:
                from espl.rl.checkpoint import save_checkpoint

                save_checkpoint(trainer, staging / TRAINER_CHECKPOINT)
            (staging / LOOP_STATE).write_text(json.dumps(self.state.to_dict(), indent=2))


class Run(RunRecords):
    """A configured run directory with its policy, drivers and records (see the module doc)."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: RunDir,
        policy: Policy,
        train_driver: RolloutDriver,
        eval_driver: RolloutDriver,
        *,
        state: LoopState,
        resumed: bool,
        observer: Observer | None = None,
    ) -> None:
        super().__init__(run_dir, state, observer=observer)
        self.config = config
        self.policy = policy
        self.train_driver = train_driver
        self.eval_driver = eval_driver
        self.train_tasks: list[Task] = list(train_driver.envs(1)[0].tasks)
        self.test_tasks: list[Task] = list(eval_driver.envs(1)[0].tasks[: config.eval_limit])
        self.resumed = resumed
        """True when the run continues from a checkpoint (its records are cut back to it)."""
        self.ratings = RatingSystem()
        self.reflector: Any = None
        """Built on first use by `espl.run.builder.build_reflector` (one per run)."""
        self.plan: Any = None
        """The `RunPlan` the parts were built from (set by `espl.run.builder.build_run`)."""

    # -- seeds and populations -----------------------------------------------------------
    def seed(self, iteration: int, phase: Phase) -> int:
        return phase_seed(self.config.seed, iteration, phase)

    def start_population(self, capacity: int | None = None, *, rated: bool = True) -> Population:
        """The population the run starts from: replayed from the prompt log on resume, else the
        seed prompt (rated with the prior unless `rated` is False) in a population of
        `capacity` (default: the config's), logged as step 0."""
        evolution = self.config.evolution
        if self.resumed and self.prompt_log.path.exists():
            return load_prompt_log(self.prompt_log.path, up_to_step=self.state.iteration)
        population = Population(capacity=capacity or evolution.capacity, window_size=evolution.window)
        principles = list(DEFAULT_PRINCIPLES) if evolution.initial_principles is None else evolution.initial_principles
        population.create(principles, step=0, rating=self.ratings.fresh() if rated else None)
        self.prompt_log.append_step(population, 0)
        return population

    def eval_prompt(self, population: Population) -> SystemPrompt:
        """The prompt evaluated on the test set (`evolution.eval_prompt`: best by mu - 2 sigma, or newest)."""
        members = population.member_ids
        rule = self.config.evolution.eval_prompt
        return population.get(choose_eval_prompt(members, population.ratings(members), rule))  # type: ignore[arg-type]

    # -- rollouts --------------------------------------------------------------------------
    def train_rollouts(self, episodes: Sequence[Episode], iteration: int) -> list[Trajectory]:
        """An iteration's training rollouts, counted in the budget and recorded."""
        trajectories = self.train_driver.run(episodes, self.policy.adapter, seed=self.seed(iteration, Phase.TRAIN))
        self.record_rollouts(trajectories, iteration, "train")
        return trajectories

    def evaluate(self, prompt: SystemPrompt, iteration: int, adapter: Adapter | None = None) -> dict[str, Any]:
        """The test split under `prompt` with `adapter` (default: the policy's current one, taken
        once as evaluation starts, so a version published meanwhile is not what is evaluated);
        recorded and returned."""
        started = time.perf_counter()
        pinned = adapter if adapter is not None else self.policy.adapter
        result = evaluate(
            self.eval_driver, self.test_tasks, n_samples=self.config.eval_samples, system_prompt=prompt.text,
            prompt_id=prompt.id, adapter=pinned, seed=self.seed(iteration, Phase.EVAL),
        )
        self.record_rollouts(result.trajectories, iteration, "eval")
        metrics = {"iteration": iteration, "prompt_id": prompt.id, **result.metrics, "eval_s": time.perf_counter() - started}
        self.state.evals.append(metrics)
        return metrics

    def checkpoint(self, trainer: Any = None) -> None:
        super().checkpoint(trainer if trainer is not None else self.policy.trainer)

    def close(self) -> None:
        try:
            self.policy.engine.release_turns()
        finally:
            if self.tracker is not None:
                self.tracker.finish()
