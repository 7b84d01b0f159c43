"""The leaderboard as GitHub markdown: the table, then per env the curves and the best lineage."""

from __future__ import annotations

from espl.leaderboard.report import EnvSection, Report
from espl.leaderboard.columns import display_columns
from espl.leaderboard.table import Leaderboard


def render_markdown(report: Report) -> str:
    board = report.board
    lines = [f"# Leaderboard: {board.title}", "", intro(board), "", *table_lines(board), "", LEGEND, ""]
    for section in report.sections:
        lines += section_lines(report, section)
    return "\n".join(lines).rstrip() + "\n"


LEGEND = (
    "Accuracy is the test split's mean reward at the last evaluation (best: the highest over all "
    "evaluations), as mean ± standard error over seeds (no ± with one seed). Budget columns are "
    "means per run; generated tokens count training, evaluation and reflector output."
)


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
        return lines
    run = lineage.run
    lines += [
        f"### Best evolved prompt: {lineage.prompt_id}",
        "",
        f"From the best run of the best prompt-evolving method: {run.method}, seed {run.seed} "
        f"(`{report.relative(run.path)}`). Lineage, the evaluated prompt first and each parent "
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
