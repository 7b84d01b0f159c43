"""The leaderboard as GitHub markdown: the table, then per env the curves and the best lineage."""

from __future__ import annotations

from espl.leaderboard.report import EnvSection, Report
from espl.leaderboard.columns import display_columns
from espl.leaderboard.table import Leaderboard


def render_markdown(report: Report) -> str:
    board = report.board
    lines = [f"# Leaderboard: {board.title}", "", intro(board), "", *warning_lines(board), *table_lines(board), ""]
    lines += [LEGEND, "", *legend_lines(board), ""]
    for section in report.sections:
        lines += section_lines(report, section)
    return "\n".join(lines).rstrip() + "\n"


LEGEND = (
    "Accuracies, pass@k, budgets and wall time are the mean ± standard error over a row's runs, one per seed "
    "(no ± with one run). The columns hold:"
)
WARNING = "Warning:"


def legend(board: Leaderboard) -> list[tuple[str, str]]:
    """(header, what the column holds) for every column of the table, in order."""
    return [(column.header, column.note) for column in display_columns(board)]


def legend_lines(board: Leaderboard) -> list[str]:
    return [f"- **{header}**: {_escape(note)}." for header, note in legend(board)]


def warning_lines(board: Leaderboard) -> list[str]:
    """A quoted warning above the table for each env whose runs' configs differ (none when they agree)."""
    lines: list[str] = []
    for warning in board.config_warnings:
        lines += [f"> **{WARNING}** {warning.message(code=True)}", ""]
    return lines


def intro(board: Leaderboard) -> str:
    runs = board.runs
    return (
        f"{len(runs)} runs: {len(board.rows)} (env, method) pairs over "
        f"{len({r.seed for r in runs})} seed(s), on {', '.join(board.envs)}."
    )


def table_lines(board: Leaderboard) -> list[str]:
    columns = display_columns(board)
    lines = [
        "| " + " | ".join(c.header for c in columns) + " |",
        "|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|",
    ]
    for row in board.rows:
        lines.append("| " + " | ".join(_escape(c.cell(row)) for c in columns) + " |")
    return lines


def section_lines(report: Report, section: EnvSection) -> list[str]:
    lines = [f"## {section.env}", ""]
    for figure in (section.accuracy, section.reward):
        if figure is not None:
            lines += [f"![{figure.title}]({report.relative(figure.stem.with_suffix('.png'))})", ""]
    lineage = section.lineage
    if lineage is None or lineage.run is None:
        return lines + ([section.lineage_note, ""] if section.lineage_note else [])
    run = lineage.run
    lines += [
        f"### Best evolved prompt: {lineage.prompt_id}",
        "",
        f"From the best run (by final test accuracy) of the best prompt-evolving method: {run.method}, seed {run.seed} "
        f"(run directory `{run.path.name}`). Lineage, the evaluated prompt first and each parent "
        "indented under its child:",
        "",
        "```text",
        *lineage.text_tree(),
        "```",
        "",
        "Principles:",
        "",
        *(f"{i}. {_escape(p)}" for i, p in enumerate(lineage.prompt.principles, start=1)),
        "",
    ]
    if section.lineage_figure is not None:
        figure = section.lineage_figure
        lines += [f"![{figure.title}]({report.relative(figure.stem.with_suffix('.png'))})", ""]
    return lines


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
