"""Writes a GEPA run through the run's records (`espl.run.context.RunRecords`), like every method.

The recorder is both the adapter's `RolloutLedger` (it grants rollouts under the budget and
writes each one to `rollouts.jsonl`) and a GEPA callback (it turns each candidate GEPA
accepts into a `SystemPrompt` of the population, operator "gepa", parents from GEPA's
lineage, and notes every proposal's fate).

The budget is cut into windows of M x B x N rollouts, one `metrics.jsonl` line each, like
an `evolution` iteration: rollouts are granted so that none straddles a window boundary, a
window closes before the next rollout starts (so it sees every candidate GEPA has accepted
by then), and the test split is evaluated with GEPA's current best candidate at the
`eval_every` interval. The last window closes in `finish`, after GEPA has returned.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.trajectory import Trajectory
from espl.gepa.adapter import RolloutBudgetExhausted
from espl.evolution.reflector import ReflectorUsage
from espl.evolution.population import Population
from espl.evolution.system_prompt import PromptParseError, SystemPrompt, parse_principles, render_principles
from espl.run.context import RunRecords

log = logging.getLogger(__name__)

GEPA_OPERATOR = "gepa"
EvaluateFn = Callable[[int, SystemPrompt], dict[str, Any]]


@dataclass
class _Window:
    """What happened between two `metrics.jsonl` lines."""

    rollouts: int = 0
    reward_sum: float = 0.0
    generated_tokens: int = 0
    errors: int = 0
    rollout_s: float = 0.0
    rewards_by_prompt: dict[str, list[float]] = field(default_factory=dict)
    new_candidates: list[dict[str, Any]] = field(default_factory=list)
    proposals: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


def _guarded(method: Callable[..., None]) -> Callable[..., None]:
    """GEPA swallows callback errors; keep them so the run fails instead of recording wrong data."""

    @functools.wraps(method)
    def wrapper(self: RunRecorder, event: Any) -> None:
        try:
            method(self, event)
        except Exception as error:  # noqa: BLE001 - re-raised by `raise_errors`
            self.errors.append(error)

    return wrapper


class RunRecorder:
    def __init__(
        self,
        records: RunRecords,
        population: Population,
        seed_prompt: SystemPrompt,
        *,
        window: int,
        windows: int,
        eval_every: int,
        evaluate: EvaluateFn,
        reflection_usage: Callable[[], ReflectorUsage],
    ) -> None:
        if window < 1:
            raise ValueError("a window holds at least one rollout")
        self.records = records
        self.state = records.state
        self.population = population
        self.seed_prompt = seed_prompt
        self.window_size = window
        self.windows = windows
        self.cap = window * windows
        self.eval_every = eval_every
        self.evaluate = evaluate
        self.reflection_usage = reflection_usage
        self.ids: dict[int, str] = {}
        """GEPA candidate index -> prompt id."""
        self.val_scores: dict[int, float] = {}
        self.errors: list[BaseException] = []
        self.gepa_iterations = 0
        self._by_text: dict[str, str] = {seed_prompt.text: seed_prompt.id}
        self._parent: int | None = None
        self._window = _Window()
        self._usage_seen = reflection_usage().copy()
        self._started = time.perf_counter() - self.state.wall_s

    # -- RolloutLedger ---------------------------------------------------------------------
    @property
    def spent(self) -> int:
        return int(self.state.budget.train_rollouts)

    def grant(self, wanted: int) -> int:
        while self.spent >= (self.state.iteration + 1) * self.window_size and self.state.iteration + 1 < self.windows:
            self._close_window(final=False)
        window_end = (self.state.iteration + 1) * self.window_size
        return max(0, min(wanted, self.cap - self.spent, window_end - self.spent))

    def spend(self, trajectories: Sequence[Trajectory]) -> None:
        self.records.record_rollouts(trajectories, self.state.iteration + 1, "train")
        w = self._window
        for t in trajectories:
            w.rollouts += 1
            w.reward_sum += t.reward
            w.generated_tokens += t.n_sampled
            w.errors += t.error is not None
            w.rollout_s += t.timings.get("generate_s", 0.0) + t.timings.get("env_s", 0.0)
            if t.prompt_id is not None:
                w.rewards_by_prompt.setdefault(t.prompt_id, []).append(t.reward)

    def prompt_id_of(self, text: str) -> str | None:
        return self._by_text.get(text)

    # -- GEPA's stop condition and callbacks -----------------------------------------------
    def should_stop(self, gepa_state: Any = None) -> bool:
        return self.spent >= self.cap or bool(self.errors)

    @_guarded
    def on_valset_evaluated(self, event: Mapping[str, Any]) -> None:
        index = int(event["candidate_idx"])
        score = float(event["average_score"])
        self.val_scores[index] = score
        if index not in self.ids:
            self.ids[index] = self._register(index, dict(event["candidate"]), event.get("parent_ids") or ())
        entry = {"id": self.ids[index], "gepa_index": index, "val_score": score}
        entry["parents"] = list(self.population.get(self.ids[index]).parents)
        self._window.new_candidates.append(entry)

    @_guarded
    def on_candidate_selected(self, event: Mapping[str, Any]) -> None:
        self._parent = int(event["candidate_idx"])

    @_guarded
    def on_candidate_accepted(self, event: Mapping[str, Any]) -> None:
        parents = [self.ids.get(int(p)) for p in event.get("parent_ids") or () if p is not None]
        self._window.proposals.append(
            {"parents": parents, "accepted": True, "child": self.ids.get(int(event["new_candidate_idx"])),
             "minibatch_score": float(event["new_score"])}
        )

    @_guarded
    def on_candidate_rejected(self, event: Mapping[str, Any]) -> None:
        parent = self.ids.get(self._parent) if self._parent is not None else None
        self._window.proposals.append(
            {"parents": [parent], "accepted": False, "parent_minibatch_score": float(event["old_score"]),
             "minibatch_score": float(event["new_score"]), "reason": str(event["reason"])}
        )

    @_guarded
    def on_evaluation_skipped(self, event: Mapping[str, Any]) -> None:
        self._window.skipped += 1

    @_guarded
    def on_iteration_end(self, event: Mapping[str, Any]) -> None:
        self.gepa_iterations += 1

    def on_error(self, event: Mapping[str, Any]) -> None:
        error = event["exception"]
        if isinstance(error, RolloutBudgetExhausted):
            log.info("GEPA stopped at the rollout budget: %s", error)
        else:
            self.errors.append(error)

    def raise_errors(self) -> None:
        if self.errors:
            raise self.errors[0]

    # -- candidates --------------------------------------------------------------------------
    def _register(self, index: int, candidate: dict[str, str], parent_indices: Sequence[Any]) -> str:
        (text,) = candidate.values()
        if index == 0 and text == self.seed_prompt.text:
            return self.seed_prompt.id
        principles, header = prompt_fields(text)
        parents = [self.ids[int(p)] for p in parent_indices if p is not None and int(p) in self.ids]
        prompt = self.population.create(
            principles, header=header, step=self.state.iteration + 1, operator=GEPA_OPERATOR, parents=parents,
            metadata={"gepa_index": index, "train_rollouts_at_discovery": self.spent},
        )
        if prompt.text != text:
            log.warning("candidate %s is recorded with different surrounding whitespace", prompt.id)
        self._by_text.setdefault(text, prompt.id)
        return prompt.id

    def best_index(self) -> int:
        """GEPA's rule: the highest mean validation score, the earliest candidate on ties."""
        if not self.val_scores:
            return 0
        return max(self.val_scores, key=lambda i: (self.val_scores[i], -i))

    def best_prompt(self) -> SystemPrompt:
        return self.population.get(self.ids.get(self.best_index(), self.seed_prompt.id))

    # -- windows -----------------------------------------------------------------------------
    def finish(self, best_index: int | None = None) -> SystemPrompt:
        """Close the remaining windows; `best_index` is GEPA's final choice (its result)."""
        if best_index is not None and best_index != self.best_index():
            log.warning("GEPA's best candidate %s differs from the recorded best %s", best_index, self.best_index())
        final_best = self.population.get(self.ids[best_index]) if best_index in self.ids else self.best_prompt()
        while self.spent > self.state.iteration * self.window_size:  # rollouts not in a line yet
            last = self.spent <= (self.state.iteration + 1) * self.window_size
            self._close_window(final=last, best=final_best if last else None)
        return final_best

    def _close_window(self, *, final: bool, best: SystemPrompt | None = None) -> None:
        i = self.state.iteration + 1
        w, best = self._window, best or self.best_prompt()
        usage = self.reflection_usage()
        delta = usage - self._usage_seen
        self._usage_seen = usage.copy()
        self.state.budget.add_reflector(delta.calls, delta.prompt_tokens, delta.completion_tokens)
        record: dict[str, Any] = {
            "iteration": i,
            "prompts": list(w.rewards_by_prompt),
            "train_reward": w.reward_sum / max(w.rollouts, 1),
            "train_reward_per_prompt": {pid: sum(r) / len(r) for pid, r in w.rewards_by_prompt.items()},
            "rollouts": w.rollouts,
            "generated_tokens": w.generated_tokens,
            "errors": w.errors,
            "evolution": {
                "gepa": {
                    "iterations": self.gepa_iterations,
                    "candidates": len(self.ids),
                    "best": best.id,
                    "best_val_score": self.val_scores.get(self._index_of(best.id)),
                    "new_candidates": w.new_candidates,
                    "proposals": w.proposals,
                    "skipped_perfect_minibatches": w.skipped,
                    "reflector": delta.to_record(),
                }
            },
        }
        if self.eval_every > 0 and (final or i % self.eval_every == 0):
            record["eval"] = self.evaluate(i, best)
        self.state.iteration = i
        self.state.wall_s = time.perf_counter() - self._started
        record["timings"] = {"rollout_s": w.rollout_s}
        self.records.record_iteration(record, self.population)
        self._window = _Window()

    def _index_of(self, prompt_id: str) -> int | None:
        return next((index for index, pid in self.ids.items() if pid == prompt_id), None)


def prompt_fields(text: str) -> tuple[tuple[str, ...], str | None]:
    """(principles, header) of a `SystemPrompt` whose `text` is exactly `text`.

    A numbered list that renders back unchanged keeps its principles; any other text (GEPA
    writes free-form instructions) is kept whole as the header of a prompt with no principle.
    """
    try:
        parsed = parse_principles(text)
    except PromptParseError:
        return (), text
    if render_principles(parsed.principles, header=parsed.header) == text:
        return parsed.principles, parsed.header
    return (), text
