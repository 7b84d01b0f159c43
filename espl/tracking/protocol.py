"""What a tracking backend implements, and what it is told about the run it reports.

A backend mirrors the run's own records (`metrics.jsonl`, the prompt population of
`prompts.jsonl`) into an experiment tracker; the run directory stays the source of truth, so a
backend never decides anything about the run and may be added or dropped on resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class TrackerContext:
    """The run a backend reports: where its files go, a display name, the resolved config."""

    run_dir: Path
    """The run directory; a backend writes under `run_dir / <its name>` (or its own store)."""
    name: str
    """A readable run name: `<env>--<method>--<model>/<run folder>`."""
    config: Mapping[str, Any] = field(default_factory=dict)
    resumed_after: int | None = None
    """The last completed iteration when the run resumes from a checkpoint (None: a fresh run).
    Records of later iterations are written again, so a backend that can drop them does."""

    def folder(self, backend: str) -> Path:
        """`run_dir / backend`, created."""
        path = self.run_dir / backend
        path.mkdir(parents=True, exist_ok=True)
        return path


@runtime_checkable
class Tracker(Protocol):
    """One experiment tracker. Steps are iterations (0: the starting policy's evaluation)."""

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Scalars keyed by slash-separated names (`train_reward`, `eval/accuracy`, `train/loss`)."""
        ...

    def log_prompts(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """The prompt population after `step` as a table (`espl.tracking.records.PROMPT_COLUMNS`)."""
        ...

    def log_text(self, step: int, name: str, text: str) -> None:
        """A named text at `step` (the evaluated prompt's principles)."""
        ...

    def finish(self) -> None:
        """Flush and close; called once when the run ends, also when it fails."""
        ...
