"""The leaderboard's columns, shared by the markdown, HTML and CSV writers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from espl.leaderboard.stats import Estimate
from espl.leaderboard.table import Leaderboard, LeaderboardRow


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[LeaderboardRow], str]
    numeric: bool = False


def percent(value: Estimate | None) -> str:
    return "-" if value is None else value.format(scale=100.0, digits=1)


def count(value: Estimate | None) -> str:
    if value is None:
        return "-"
    return f"{value.mean:,.0f}" if value.se is None else f"{value.mean:,.0f} ± {value.se:,.0f}"


def seconds(value: Estimate | None) -> str:
    return "-" if value is None else value.format(digits=0)


def display_columns(board: Leaderboard) -> list[Column]:
    """Columns of the human-readable tables (markdown and HTML)."""
    columns = [
        Column("env", lambda r: r.env),
        Column("method", lambda r: r.method),
        Column("model", lambda r: ", ".join(r.models)),
        Column("seeds", lambda r: str(len(r.seeds)), numeric=True),
        Column("test acc. (%)", lambda r: percent(r.final_accuracy), numeric=True),
        Column("best acc. (%)", lambda r: percent(r.best_accuracy), numeric=True),
    ]
    for key in board.pass_keys:
        columns.append(Column(f"{key} (%)", lambda r, key=key: percent(r.pass_at.get(key)), numeric=True))
    columns += [
        Column("train rollouts", lambda r: count(r.budget["train_rollouts"]), numeric=True),
        Column("generated tokens", lambda r: count(r.budget["total_generated_tokens"]), numeric=True),
        Column("reflector calls", lambda r: count(r.budget["reflector_calls"]), numeric=True),
        Column("reflector tokens", lambda r: count(r.budget["reflector_tokens"]), numeric=True),
        Column("wall time (s)", lambda r: seconds(r.wall_s), numeric=True),
        Column("hardware", lambda r: "; ".join(r.hardware) + " / torch " + ", ".join(r.torch)),
        Column("commit", lambda r: ", ".join(r.git_commits)),
    ]
    return columns


def to_csv(board: Leaderboard) -> str:
    """Machine-readable: raw means and standard errors (empty when one seed)."""
    header = ["env", "method", "model", "seeds", "n_seeds"]
    metrics = ["final_accuracy", "best_accuracy", *board.pass_keys, *(f"budget.{name}" for name in _budget_names(board)), "wall_s"]
    for name in metrics:
        header += [f"{name}_mean", f"{name}_se"]
    header += ["hardware", "torch", "git_commits"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in board.rows:
        values: list[object] = [row.env, row.method, ";".join(row.models), ";".join(map(str, row.seeds)), len(row.seeds)]
        estimates = [row.final_accuracy, row.best_accuracy, *(row.pass_at.get(k) for k in board.pass_keys),
                     *(row.budget[name] for name in _budget_names(board)), row.wall_s]
        for value in estimates:
            values += [_number(value.mean if value else None), _number(value.se if value else None)]
        values += [";".join(row.hardware), ";".join(row.torch), ";".join(row.git_commits)]
        writer.writerow(values)
    return buffer.getvalue()


def _budget_names(board: Leaderboard) -> list[str]:
    return list(board.rows[0].budget) if board.rows else []


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"
