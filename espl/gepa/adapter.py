"""The GEPA adapter: a GEPA candidate `{"system_prompt": text}` run through our rollout driver.

One metric call of GEPA is one rollout here: each (candidate, task) pair is run as exactly
one episode under the candidate's system prompt, and its score is the env's reward. That is
GEPA's own model (one score per example, summed on minibatches and averaged on the
validation set), and it makes GEPA's `max_metric_calls` and our rollout count the same unit.

Every rollout is granted by a `RolloutLedger` before it runs and reported to it after, so a
budget is a hard cap: when the ledger has no room left, `evaluate` runs what still fits and
then raises `RolloutBudgetExhausted` (GEPA drops that evaluation and its stopper ends the run).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from gepa.core.adapter import EvaluationBatch

from agents.engine import Adapter
from agents.rollout import Episode, RolloutDriver
from agents.trajectory import Trajectory
from envs.base import Task
from espl.gepa.feedback import EnvFeedback, FeedbackWriter, ReflectiveRecord
from espl.run.phases import Phase, phase_seed

COMPONENT = "system_prompt"
"""The one text component GEPA evolves."""


class RolloutBudgetExhausted(RuntimeError):
    """The training-rollout budget has no room for the evaluation GEPA asked for."""


class RolloutLedger(Protocol):
    """Grants and records training rollouts (the budget, and where the records go)."""

    def grant(self, wanted: int) -> int:
        """How many of `wanted` rollouts may run now (0: the budget is spent)."""
        ...

    def spend(self, trajectories: Sequence[Trajectory]) -> None:
        """Account rollouts that ran."""
        ...


class RolloutCap:
    """The plain ledger: a cap on the number of rollouts, nothing recorded."""

    def __init__(self, cap: int | None) -> None:
        self.cap = cap
        self.spent = 0

    def grant(self, wanted: int) -> int:
        return wanted if self.cap is None else max(0, min(wanted, self.cap - self.spent))

    def spend(self, trajectories: Sequence[Trajectory]) -> None:
        self.spent += len(trajectories)


class RolloutAdapter:
    """`gepa.core.adapter.GEPAAdapter` over `RolloutDriver` episodes of our envs.

    `prompt_id_of` names a candidate text in the rollout records once GEPA has accepted it
    (proposals still on trial run with no id; their text is in the trajectory either way).
    """

    propose_new_texts = None
    """GEPA's default reflective proposer writes the new texts (with our reflector as its LM)."""

    def __init__(
        self,
        driver: RolloutDriver,
        ledger: RolloutLedger,
        *,
        seed: int = 0,
        engine_adapter: Adapter | None = None,
        feedback: FeedbackWriter | None = None,
        prompt_id_of: Callable[[str], str | None] | None = None,
        component: str = COMPONENT,
    ) -> None:
        self.driver = driver
        self.ledger = ledger
        self.seed = seed
        self.engine_adapter = engine_adapter
        self.feedback = feedback or EnvFeedback()
        self.prompt_id_of = prompt_id_of or (lambda text: None)
        self.component = component
        self.calls = 0
        """`driver.run` calls made; each draws its own sampling seed from (seed, calls)."""

    def evaluate(
        self, batch: list[Task], candidate: dict[str, str], capture_traces: bool = False
    ) -> EvaluationBatch[Trajectory, dict[str, Any]]:
        text = candidate[self.component]
        prompt_id = self.prompt_id_of(text)
        episodes = [Episode(task, text, prompt_id, 0) for task in batch]
        trajectories: list[Trajectory] = []
        while len(trajectories) < len(episodes):
            allowed = self.ledger.grant(len(episodes) - len(trajectories))
            if allowed <= 0:
                raise RolloutBudgetExhausted(
                    f"no rollout budget left for {len(episodes) - len(trajectories)} of {len(episodes)} episodes"
                )
            chunk = episodes[len(trajectories) : len(trajectories) + allowed]
            ran = self.driver.run(chunk, self.engine_adapter, seed=self._next_seed())
            self.ledger.spend(ran)
            trajectories += ran
        return EvaluationBatch(
            outputs=[_output(t) for t in trajectories],
            scores=[float(t.reward) for t in trajectories],
            trajectories=trajectories if capture_traces else None,
            num_metric_calls=len(trajectories),
        )

    def make_reflective_dataset(
        self,
        candidate: dict[str, str],
        eval_batch: EvaluationBatch[Trajectory, dict[str, Any]],
        components_to_update: list[str],
    ) -> Mapping[str, Sequence[ReflectiveRecord]]:
        records = [self.feedback.record(t) for t in eval_batch.trajectories or []]
        return {name: records for name in components_to_update}

    def _next_seed(self) -> int:
        self.calls += 1
        return phase_seed(self.seed, self.calls, Phase.GEPA_ROLLOUTS)


def _output(trajectory: Trajectory) -> dict[str, Any]:
    """What GEPA keeps per example (it never reads it): small, JSON-ready."""
    return {"task_id": trajectory.task_id, "reward": float(trajectory.reward), "response": trajectory.response_text}
