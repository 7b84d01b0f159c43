"""Live progress for `espl-bench run` (rich): iteration, rollouts, reward, best rating, ETA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from espl.run.activity import explain
from espl.run.learning_curve import LEARNING_CURVE


class LiveProgress:
    def __init__(self, console: Console, total: int, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self.task = self.progress.add_task("iterations", total=max(total, 1), info="")

    def __enter__(self) -> LiveProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def status(self, text: str) -> None:
        self.progress.update(self.task, info=text)

    def update(self, record: dict[str, Any]) -> None:
        budget = record.get("budget", {})
        parts = [
            f"rollouts {budget.get('train_rollouts', 0)}",
            f"reward {record.get('train_reward', 0.0):.3f}",
        ]
        match = record.get("evolution", {}).get("match")
        if match:
            parts.append(f"prompts {','.join(record.get('prompts', []))}")
        if "eval" in record:
            parts.append(f"test acc {record['eval'].get('accuracy', 0.0):.3f}")
        self.progress.update(self.task, completed=record["iteration"], info="  ".join(parts))
        if self.quiet:
            self.console.print(f"iteration {record['iteration']}: " + ", ".join(parts))

    def print_summary(self, summary: dict[str, Any], run_dir: Path) -> None:
        table = Table(title=f"{summary['method']} on {summary['env']} ({summary['model']})")
        table.add_column("metric")
        table.add_column("value", justify="right")
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
        for name, value in rows:
            table.add_row(name, str(value))
        self.console.print(table)
        for line in explain(summary):
            self.console.print(line, highlight=False)
        prompt = summary["eval_prompt"]
        lineage = f" ({prompt['operator']} of {', '.join(prompt['parents'])})" if prompt.get("parents") else ""
        self.console.print("evaluated prompt " + prompt["id"] + lineage + ":")
        principles = summary["eval_prompt"]["principles"]
        for i, principle in enumerate(principles):
            self.console.print(f"  G{i}. {principle}")
        if not principles and summary["eval_prompt"].get("text"):  # free-text prompts (GEPA)
            self.console.print("  " + summary["eval_prompt"]["text"].replace("\n", "\n  "))
        if (run_dir / LEARNING_CURVE).exists():
            self.console.print(f"learning curve: {run_dir / LEARNING_CURVE}")
        self.console.print(f"run directory: [bold]{run_dir}[/bold]")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"
