"""The run records' side of tracking: each metrics line, as it is written, goes to every tracker.

`espl.run.context.RunRecords` calls `TrackerFeed.record` right after it appended the line to
`metrics.jsonl` (and the step to `prompts.jsonl`), so trackers see exactly what the run
directory holds, in the same order. A run without trackers has no feed at all.

A tracker that fails mid-run (a full disk, a server gone) is reported and dropped, and the run
goes on: the run directory is the record, a tracker only a copy of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from espl.tracking.protocol import Tracker
from espl.tracking.records import PROMPT_COLUMNS, STEP_KEY, evaluated_prompt, prompt_rows, scalar_metrics

if TYPE_CHECKING:
    from espl.evolution.population import Population

EVAL_PROMPT = "eval_prompt"
log = logging.getLogger(__name__)


class TrackerFeed:
    """Fans one run's records out to its trackers (by name)."""

    def __init__(self, trackers: Mapping[str, Tracker]) -> None:
        self.trackers = dict(trackers)
        self.dropped: dict[str, str] = {}
        """Trackers that failed and were dropped, with the error."""

    def record(self, record: Mapping[str, Any], population: Population | None = None) -> None:
        """A metrics line (and the population after it): scalars, the prompt table, the evaluated prompt."""
        step = int(record[STEP_KEY])
        metrics = scalar_metrics(record)
        rows = prompt_rows(population) if population is not None else None
        text = evaluated_prompt(record, population) if population is not None else None
        for name, tracker in list(self.trackers.items()):
            self._guarded(name, step, lambda: _send(tracker, step, metrics, rows, text))

    def finish(self) -> None:
        """Close every tracker (one that fails to close is reported like any other failure)."""
        for name, tracker in list(self.trackers.items()):
            self._guarded(name, None, tracker.finish)
        self.trackers.clear()

    def _guarded(self, name: str, step: int | None, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as error:  # a copy failing must not stop the run it copies
            when = "closing" if step is None else f"at iteration {step}"
            self.dropped[name] = f"{type(error).__name__}: {error}"
            self.trackers.pop(name, None)
            log.warning("tracker %s failed %s and is dropped for the rest of the run (the run directory "
                        "holds every record): %s", name, when, self.dropped[name])


def _send(tracker: Tracker, step: int, metrics: Mapping[str, float], rows: list[list[Any]] | None,
          text: str | None) -> None:
    tracker.log_metrics(step, metrics)
    if rows is not None:
        tracker.log_prompts(step, PROMPT_COLUMNS, rows)
    if text is not None:
        tracker.log_text(step, EVAL_PROMPT, text)
