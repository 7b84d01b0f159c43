"""`espl-bench leaderboard`: build leaderboard files from existing run directories.

    espl-bench leaderboard runs/suites/math-cpu --out leaderboards/math-cpu
    espl-bench leaderboard 'runs/gsm8k--*/*' --out leaderboards/gsm8k --title "GSM8K, CPU"

Writes `<out>.md`, `<out>.csv`, a self-contained `<out>.html` and plots under `<out>/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from espl.leaderboard import Report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories, globs, or folders searched for finished runs")
    parser.add_argument("--out", type=Path, default=Path("leaderboards") / "leaderboard",
                        help="output path without suffix (default: leaderboards/leaderboard)")
    parser.add_argument("--title", help="title of the leaderboard (default: the --out name)")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from espl.leaderboard import NoRunsError, write_leaderboard

    console = Console()
    try:
        report = write_leaderboard(args.runs, args.out, args.title)
    except (NoRunsError, FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        return 2
    print_written(console, report)
    return 0


def print_written(console: Console, report: Report) -> None:
    """What was written, and (as in the files) a warning for each env whose merged runs' configs
    differ outside method and seed: `leaderboard` and `compare` both report through here."""
    from rich.markup import escape

    console.print(f"{len(report.board.runs)} runs, {len(report.board.rows)} rows")
    for warning in report.board.config_warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning.message())}", soft_wrap=True)
    for path in report.files:
        console.print(f"wrote [bold]{path}[/bold]")
    console.print(f"plots in [bold]{report.out}/[/bold]")
