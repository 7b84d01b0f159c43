"""`prompts.jsonl`: one line per step, enough to rebuild the population and its whole lineage.

A line holds the step's full membership plus only what changed since the previous line:
prompts created (in full, so evicted ancestors stay in the file), new rating points and new
evictions. Replaying the lines in order (`load_prompt_log`) rebuilds the population, every
rating history and the whole lineage. The file is a `JsonlLog` like every run record.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from espl.evolution.population import Population
from espl.evolution.system_prompt import RatingPoint, SystemPrompt
from espl.files.jsonl import JsonlLog


class PromptLog:
    """Appends one JSON line per step to `prompts.jsonl`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.log = JsonlLog(path)
        self.path = self.log.path
        self._written: set[str] = set()
        self._history_len: dict[str, int] = {}
        self._evicted: set[str] = set()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> PromptLog:
        """Continue an existing log (or start a new one), dropping a torn final line."""
        log = cls(path)
        if log.path.exists():
            log.log.repair()
            log._mark_written(load_prompt_log(log.path))
        return log

    def _mark_written(self, population: Population) -> None:
        for prompt in population.archive():
            self._written.add(prompt.id)
            self._history_len[prompt.id] = len(prompt.rating_history)
            if prompt.evicted_step is not None:
                self._evicted.add(prompt.id)

    def append_step(self, population: Population, step: int) -> dict[str, Any]:
        """Write the step's line (flushed and fsynced) and return it."""
        record = self.step_record(population, step)
        self.log.append([record])
        self._mark_written(population)
        return record

    def step_record(self, population: Population, step: int) -> dict[str, Any]:
        new_prompts: list[dict[str, Any]] = []
        rating_points: dict[str, list[list[Any]]] = {}
        evicted: dict[str, int] = {}
        for prompt in population.archive():
            if prompt.id not in self._written:
                new_prompts.append(prompt.to_record())
                continue
            already = self._history_len.get(prompt.id, 0)
            if len(prompt.rating_history) > already:
                rating_points[prompt.id] = [p.to_record() for p in prompt.rating_history[already:]]
            if prompt.evicted_step is not None and prompt.id not in self._evicted:
                evicted[prompt.id] = prompt.evicted_step
        return {
            "step": step,
            "capacity": population.capacity,
            "window_size": population.window_size,
            "next_index": population.next_index,
            "members": population.member_ids,
            "newest": population.member_ids[-1] if len(population) else None,
            "new_prompts": new_prompts,
            "rating_points": rating_points,
            "evicted": evicted,
        }


def load_prompt_log(path: str | os.PathLike[str], up_to_step: int | None = None) -> Population:
    """Rebuild a population, ratings and full lineage from `prompts.jsonl` alone.

    A final line torn by a killed run is ignored; a bad line anywhere else is an error.
    `up_to_step` replays only lines with `step <= up_to_step` (to match an older checkpoint).
    """
    population: Population | None = None
    for record in JsonlLog(path).read():
        if up_to_step is not None and int(record["step"]) > up_to_step:
            break
        if population is None:
            population = Population(int(record["capacity"]), int(record["window_size"]))
        _apply_step(population, record)
    if population is None:
        raise ValueError(f"{path} holds no step")
    return population


def _apply_step(population: Population, record: Mapping[str, Any]) -> None:
    for prompt_record in record["new_prompts"]:
        population._adopt(SystemPrompt.from_record(prompt_record))
    for prompt_id, points in record["rating_points"].items():
        population.get(prompt_id).rating_history.extend(RatingPoint.from_record(p) for p in points)
    for prompt_id, evicted_step in record["evicted"].items():
        population.get(prompt_id).evicted_step = int(evicted_step)
    population.capacity = int(record["capacity"])
    population.window_size = int(record["window_size"])
    population._set_members(record["members"], int(record["next_index"]))
