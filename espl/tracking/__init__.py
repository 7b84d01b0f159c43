"""Experiment tracking: a run's records mirrored into TensorBoard, Weights & Biases or MLflow.

Chosen with `report_to` (`--report-to tensorboard,wandb`; `none` or an empty list: off). Each
backend is one module implementing `Tracker` (`protocol.py`) and one registration; the loop
feeds them the very records it writes to `metrics.jsonl` (`feed.py`).

| name          | writes                                   | needs (the `tracking` extra)          |
|---------------|------------------------------------------|---------------------------------------|
| `tensorboard` | `<run>/tensorboard/` event files         | `tensorboard`                         |
| `wandb`       | `<run>/wandb/` (offline unless WANDB_MODE says otherwise) | `wandb`              |
| `mlflow`      | `<run>/mlflow/` SQLite store + artifacts (or MLFLOW_TRACKING_URI) | `mlflow-skinny`, `sqlalchemy`, `alembic` |

A new backend, from any package (see `espl.plugins`):

    from espl.tracking import register_tracker
    register_tracker("my-tracker", "mypackage.tracking:MyTracker", requires=("mypackage_client",))

`MyTracker(context: TrackerContext)` is built when the run starts; `requires` names the modules
checked before the run starts, so a missing one is an error before any model loads.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from espl.plugins import load_plugins
from espl.tracking.feed import TrackerFeed
from espl.tracking.protocol import Tracker, TrackerContext

OFF = "none"
"""`report_to = ["none"]` turns tracking off, as in TRL."""
EXTRA_INSTALL = "pip install 'espl-bench[tracking]'"


class TrackingError(ValueError):
    """A `report_to` that cannot be honoured: an unknown name or a missing package."""


@dataclass(frozen=True)
class TrackerEntry:
    target: str | Callable[[TrackerContext], Any]
    """``"module:Class"`` (imported when the run starts) or a class / factory taking the context."""
    requires: tuple[str, ...] = ()
    """Importable modules the backend needs."""


_TRACKERS: dict[str, TrackerEntry] = {
    "tensorboard": TrackerEntry("espl.tracking.tensorboard_tracker:TensorBoardTracker", ("tensorboard",)),
    "wandb": TrackerEntry("espl.tracking.wandb_tracker:WandbTracker", ("wandb",)),
    "mlflow": TrackerEntry("espl.tracking.mlflow_tracker:MlflowTracker", ("mlflow", "sqlalchemy", "alembic")),
}


def register_tracker(
    name: str, target: str | Callable[[TrackerContext], Any], *, requires: Sequence[str] = (), replace: bool = False
) -> None:
    """Make `report_to = [name]` build `target(context)`."""
    if name in _TRACKERS and not replace:
        raise ValueError(f"tracker {name!r} is already registered")
    if name == OFF:
        raise ValueError(f"{OFF!r} means no tracking; choose another name")
    if isinstance(target, str) and ":" not in target:
        raise ValueError(f"a tracker target looks like 'package.module:Class', got {target!r}")
    _TRACKERS[name] = TrackerEntry(target, tuple(requires))


def tracker_names() -> tuple[str, ...]:
    load_plugins()
    return tuple(sorted(_TRACKERS))


def check_report_to(names: Sequence[str]) -> tuple[str, ...]:
    """The trackers `names` asks for, in order, without repeats; `TrackingError` for an unknown
    name or a backend whose packages are not installed. Imports nothing."""
    wanted = [name.strip() for name in names if name.strip()]
    if OFF in wanted:
        if len(wanted) > 1:
            raise TrackingError(f"{OFF!r} turns tracking off and cannot be combined with {sorted(set(wanted) - {OFF})}")
        return ()
    known = tracker_names()
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise TrackingError(f"unknown tracker(s) {', '.join(unknown)}; known: {', '.join(known)} (or {OFF})")
    chosen = tuple(dict.fromkeys(wanted))
    for name in chosen:
        missing = [module for module in _TRACKERS[name].requires if importlib.util.find_spec(module) is None]
        if missing:
            raise TrackingError(f"{name} needs the package(s) {', '.join(missing)}, not installed; "
                                f"install the tracking extra: {EXTRA_INSTALL}")
    return chosen


def make_tracker(name: str, context: TrackerContext) -> Tracker:
    """Build the backend registered under `name` for the run in `context`."""
    target = _TRACKERS[name].target
    if isinstance(target, str):
        module, _, attribute = target.partition(":")
        target = getattr(import_module(module), attribute)
    tracker = target(context)
    if not isinstance(tracker, Tracker):
        raise TypeError(f"tracker {name!r} does not implement Tracker (log_metrics, log_prompts, log_text, finish)")
    return tracker


def open_trackers(names: Sequence[str], context: TrackerContext) -> TrackerFeed | None:
    """A feed to the trackers `names` asks for; None when it asks for none (tracking off)."""
    chosen = check_report_to(names)
    if not chosen:
        return None
    trackers: dict[str, Tracker] = {}
    try:
        for name in chosen:
            trackers[name] = make_tracker(name, context)
    except BaseException:
        with contextlib.suppress(Exception):  # close what was opened; the first error is the one to see
            TrackerFeed(trackers).finish()
        raise
    return TrackerFeed(trackers)


__all__ = [
    "OFF", "Tracker", "TrackerContext", "TrackerEntry", "TrackerFeed", "TrackingError", "check_report_to",
    "make_tracker", "open_trackers", "register_tracker", "tracker_names",
]
