"""What a tracker is fed, derived from the records the run writes anyway.

A metrics line becomes flat scalars (`eval/pass@1`, `train/loss`, `budget/train_rollouts`);
the population becomes a table of prompts with their lineage and ratings; the prompt that was
evaluated becomes its rendered principles. Nothing here reads anything but those records.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from espl.evolution.population import Population

PROMPT_COLUMNS = ("id", "parents", "operator", "created_step", "member", "mu", "sigma", "principles")
STEP_KEY = "iteration"
"""The record's step; it is the tracker's step, not one of its scalars."""


def scalar_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Every number of a metrics record, nested keys joined with `/` (booleans as 0/1).

    Text, lists and missing values (prompt ids, mutation traces, `None`) are left out: the
    population table and the run directory carry them."""
    return dict(_scalars(record, ""))


def _scalars(node: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, float]]:
    for key, value in node.items():
        if key == STEP_KEY:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _scalars(value, name + "/")
        elif isinstance(value, (bool, int, float)) and not (isinstance(value, float) and math.isnan(value)):
            yield name, float(value)


def prompt_rows(population: Population) -> list[list[Any]]:
    """Every prompt ever made (members and evicted ones), in `PROMPT_COLUMNS` order."""
    members = set(population.member_ids)
    rows = []
    for prompt in population.archive():
        rating = prompt.rating
        rows.append([
            prompt.id, " ".join(prompt.parents), prompt.operator, prompt.created_step, prompt.id in members,
            None if rating is None else round(rating.mu, 4), None if rating is None else round(rating.sigma, 4),
            prompt.text,
        ])
    return rows


def evaluated_prompt(record: Mapping[str, Any], population: Population) -> str | None:
    """The text of the prompt the record's evaluation ran under (None: no evaluation)."""
    evaluation = record.get("eval")
    if not isinstance(evaluation, Mapping) or "prompt_id" not in evaluation:
        return None
    try:
        return population.get(str(evaluation["prompt_id"])).text
    except KeyError:
        return None
