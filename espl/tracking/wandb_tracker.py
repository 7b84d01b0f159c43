"""Weights & Biases: the run's history, the prompt table (`wandb.Table`) and the evaluated prompt.

Offline by default: the run is written under `<run>/wandb/offline-run-*` with no network, and
uploaded later with `wandb sync <run>/wandb/offline-run-*`. `WANDB_MODE=online` (with a login)
logs live instead; `WANDB_PROJECT` and `WANDB_ENTITY` are honoured. The W&B run id is kept in
`<run>/wandb/espl-run-id`, so a resumed run continues the same W&B run.
"""

from __future__ import annotations

import html
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from espl.tracking.protocol import TrackerContext

FOLDER = "wandb"
RUN_ID_FILE = "espl-run-id"
DEFAULT_PROJECT = "espl-bench"


class WandbTracker:
    def __init__(self, context: TrackerContext) -> None:
        # wandb suggests its LLM-tracing add-on when it sees a module named like an LLM library;
        # this project's own `agents` package is one such name, so the suggestion is noise here.
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        import wandb

        self._wandb = wandb
        folder = context.folder(FOLDER)
        id_file = folder / RUN_ID_FILE
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12] + "\n")
        self.run = wandb.init(
            dir=str(context.run_dir), id=id_file.read_text().strip(), resume="allow", name=context.name,
            project=os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT, config=dict(context.config),
            mode=os.environ.get("WANDB_MODE") or "offline",
            # no console capture: the run's live progress owns the terminal
            settings=wandb.Settings(console="off", silent=True),
        )

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def log_prompts(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = self._wandb.Table(columns=list(columns), data=[list(row) for row in rows])
        self.run.log({"prompts/population": table}, step=step)

    def log_text(self, step: int, name: str, text: str) -> None:
        self.run.log({f"prompts/{name}": self._wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step=step)

    def finish(self) -> None:
        self.run.finish()
