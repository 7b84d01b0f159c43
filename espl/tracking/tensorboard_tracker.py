"""TensorBoard: scalars, the prompt table and the evaluated prompt as event files in `<run>/tensorboard/`.

    tensorboard --logdir runs/<env>--<method>--<model>/<time>/tensorboard

Written with torch's `SummaryWriter` (the `tensorboard` package must be installed). On resume,
events from iterations after the checkpoint are purged (`purge_step`), so the curves show what
`metrics.jsonl` holds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from espl.tracking.protocol import TrackerContext

FOLDER = "tensorboard"


class TensorBoardTracker:
    def __init__(self, context: TrackerContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        purge = None if context.resumed_after is None else context.resumed_after + 1
        self.writer = SummaryWriter(log_dir=str(context.folder(FOLDER)), purge_step=purge)
        if context.resumed_after is None:
            config = json.dumps(dict(context.config), indent=2, default=str)
            self.writer.add_text("config", _code_block(config), 0)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def log_prompts(self, step: int, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.writer.add_text("prompts/population", markdown_table(columns, rows), step)

    def log_text(self, step: int, name: str, text: str) -> None:
        self.writer.add_text(f"prompts/{name}", _code_block(text), step)

    def finish(self) -> None:
        self.writer.close()


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (TensorBoard's text tab renders it); line breaks inside a cell as <br>."""

    def cell(value: Any) -> str:
        text = "" if value is None else str(value)
        return text.replace("|", "\\|").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _code_block(text: str) -> str:
    """Verbatim in TensorBoard's Markdown (an indented block keeps the principles' lines)."""
    return "\n".join("    " + line for line in text.splitlines())
