"""Progress of `espl-bench run`: a live line on a terminal, one plain line per iteration elsewhere.

Under SLURM or nohup stdout is a file, where a live bar leaves only its last frame; there each
iteration is logged as one line (reward, accuracy when evaluated, tokens, time, children) that
a user can tail and grep. The live line fits an 80-column terminal.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Column, Table

from espl.run.activity import explain
from espl.run.learning_curve import LEARNING_CURVE

INFO_WIDTH = 44
"""Columns left for the live line's figures: with 10,000 iterations, a 6-cell bar and the two
clocks, the whole line stays within 80 columns."""


class LiveProgress:
    def __init__(self, console: Console, total: int, quiet: bool = False):
        self.console = console
        self.total = max(total, 1)
        self.plain = quiet or not console.is_terminal
        self.progress = Progress(
            MofNCompleteColumn(),
            BarColumn(bar_width=6),
            TextColumn("{task.fields[info]}", table_column=Column(max_width=INFO_WIDTH, no_wrap=True, overflow="ellipsis")),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=self.plain,
        )
        self.task = self.progress.add_task("iterations", total=self.total, info="")
        self._wall_s: float | None = None
        self._children = 0
        self._accuracy: float | None = None

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def status(self, text: str) -> None:
        self.progress.update(self.task, info=text)

    def update(self, record: dict[str, Any]) -> None:
        children = children_made(record)
        self._children += children
        if "eval" in record:
            self._accuracy = float(record["eval"].get("accuracy", 0.0))
        wall_s = record.get("wall_s")
        took = None if wall_s is None or self._wall_s is None else wall_s - self._wall_s
        if record["iteration"] == 0 and wall_s is not None:
            took = wall_s
        self._wall_s = wall_s
        if self.plain:
            self.console.print(plain_line(record, self.total, children, took), highlight=False, markup=False,
                               soft_wrap=True)
        else:
            info = live_info(record, self._accuracy, self._children)
            self.progress.update(self.task, completed=record["iteration"], info=info)

    def print_summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        """The run's figures (a table on a terminal, `name: value` lines in a log), then what learned."""
        title = f"{summary['method']} on {summary['env']} ({summary['model']})"
        final, best, budget = summary.get("final", {}), summary.get("best", {}), summary["budget"]
        rows = [
            ("iterations", summary["iterations"]),
            ("final test accuracy", _pct(final.get("accuracy"))),
            ("max test accuracy (optimistic)", _pct(best.get("accuracy"))),
            *((k, _pct(v)) for k, v in final.items() if k.startswith("pass@")),
            ("train rollouts", budget["train_rollouts"]),
            ("generated tokens (all)", budget["total_generated_tokens"]),
            ("reflector calls", budget["reflector_calls"]),
            ("prompts created", summary["prompts_created"]),
            ("wall time", f"{summary['wall_s']:.0f} s"),
        ]
        if self.plain:
            self._say(title + ":")
            for name, value in rows:
                self._say(f"  {name}: {value}")
        else:
            table = Table(title=title)
            table.add_column("metric")
            table.add_column("value", justify="right")
            for name, value in rows:
                table.add_row(name, str(value))
            self.console.print(table)
        for line in explain(summary):
            self._say(line)
        prompt = summary["eval_prompt"]
        lineage = f" ({prompt['operator']} of {', '.join(prompt['parents'])})" if prompt.get("parents") else ""
        self._say("evaluated prompt " + prompt["id"] + lineage + ":")
        principles = prompt["principles"]
        for i, principle in enumerate(principles):
            self._say(f"  G{i}. {principle}")
        if not principles and prompt.get("text"):  # free-text prompts (GEPA)
            self._say("  " + prompt["text"].replace("\n", "\n  "))
        if (run_dir / LEARNING_CURVE).exists():
            self._say(f"learning curve: {run_dir / LEARNING_CURVE}")
        self._say(f"run directory: {run_dir}")

    def _say(self, text: str) -> None:
        """Text as given: no markup (a principle may hold brackets), unwrapped in a log."""
        self.console.print(text, highlight=False, markup=False, soft_wrap=self.plain)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


def children_made(record: Mapping[str, Any]) -> int:
    """Prompts an iteration's operators made (GEPA lists its new candidates)."""
    made = 0
    for entry in (record.get("evolution") or {}).values():
        if isinstance(entry, Mapping):
            made += 1 if entry.get("child") else 0
            made += len(entry.get("new_candidates") or ())
    return made


def plain_line(record: Mapping[str, Any], total: int, children: int, took: float | None) -> str:
    """One iteration as one line of a log file; iteration 0 is the starting policy's evaluation."""
    parts = []
    if "train_reward" in record:
        parts.append(f"reward {record['train_reward']:.3f}")
    if "eval" in record:
        parts.append(f"test acc {record['eval'].get('accuracy', 0.0):.3f}")
    budget = record.get("budget", {})
    if "generated_tokens" in record:
        parts.append(f"tokens {record['generated_tokens']} ({budget.get('total_generated_tokens', 0)} in all)")
    if record["iteration"] > 0:
        parts.append(f"children {children}")
    wall_s = record.get("wall_s")
    if took is not None:
        parts.append(f"{took:.1f} s" + (f" ({wall_s:.0f} s in all)" if record["iteration"] > 0 else ""))
    elif wall_s is not None:
        parts.append(f"{wall_s:.0f} s in all")
    start = " (starting policy)" if record["iteration"] == 0 else ""
    return f"iteration {record['iteration']}/{total}{start}: " + ", ".join(parts)


def live_info(record: Mapping[str, Any], accuracy: float | None, children: int) -> str:
    """The live line's figures: last reward, last test accuracy, tokens and children so far."""
    parts = []
    if "train_reward" in record:
        parts.append(f"reward {record['train_reward']:.3f}")
    if accuracy is not None:
        parts.append(f"acc {accuracy:.3f}")
    parts.append(f"tok {_short(record.get('budget', {}).get('total_generated_tokens', 0))}")
    if record["iteration"] > 0:
        parts.append(f"children {children}")
    return " ".join(parts)


def _short(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(int(n))
