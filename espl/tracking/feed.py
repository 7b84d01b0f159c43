"""The run records' side of tracking: each metrics line, as it is written, goes to every tracker.

`espl.run.context.RunRecords` calls `TrackerFeed.record` right after it appended the line to
`metrics.jsonl` (and the step to `prompts.jsonl`), so trackers see exactly what the run
directory holds, in the same order. A run without trackers has no feed at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from espl.tracking.protocol import Tracker
from espl.tracking.records import PROMPT_COLUMNS, STEP_KEY, evaluated_prompt, prompt_rows, scalar_metrics

if TYPE_CHECKING:
    from espl.evolution.population import Population

EVAL_PROMPT = "eval_prompt"


class TrackerFeed:
    """Fans one run's records out to its trackers."""

    def __init__(self, trackers: Sequence[Tracker]) -> None:
        self.trackers = list(trackers)

    def record(self, record: Mapping[str, Any], population: Population | None = None) -> None:
        """A metrics line (and the population after it): scalars, the prompt table, the evaluated prompt."""
        step = int(record[STEP_KEY])
        metrics = scalar_metrics(record)
        rows = prompt_rows(population) if population is not None else None
        text = evaluated_prompt(record, population) if population is not None else None
        for tracker in self.trackers:
            tracker.log_metrics(step, metrics)
            if rows is not None:
                tracker.log_prompts(step, PROMPT_COLUMNS, rows)
            if text is not None:
                tracker.log_text(step, EVAL_PROMPT, text)

    def finish(self) -> None:
        """Close every tracker, even when one fails to (the first failure is raised after)."""
        failure: BaseException | None = None
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as error:  # the others still get closed
                failure = failure or error
        if failure is not None:
            raise failure
