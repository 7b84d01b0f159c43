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
    note: str = ""
    """What the column holds, exactly: the legend is made of these, so it cannot drift from the table."""


SUCCESS = "succeeded (reached reward ≥ 1 without an engine error)"


def percent(value: Estimate | None) -> str:
    return "-" if value is None else value.format(scale=100.0, digits=1)


def count(value: Estimate | None) -> str:
    if value is None:
        return "-"
    return f"{value.mean:,.0f}" if value.se is None else f"{value.mean:,.0f} ± {value.se:,.0f}"


def seconds(value: Estimate | None) -> str:
    return "-" if value is None else value.format(digits=0)


def eval_size(row: LeaderboardRow, times: str = " × ", sep: str = ", ") -> str:
    """The row's test evaluation sizes; `?` stands for runs that did not record theirs."""
    labels = [size.label(times) for size in row.eval_sizes] + (["?"] if row.runs_without_eval_size else [])
    return sep.join(labels)


def display_columns(board: Leaderboard) -> list[Column]:
    """Columns of the human-readable tables (markdown and HTML), each with its legend note."""
    columns = [
        Column("env", lambda r: r.env, note="the environment; every accuracy is measured on its test split"),
        Column("method", lambda r: r.method,
               note="how the policy's weights and/or system prompt were trained (base: neither)"),
        Column("model", lambda r: ", ".join(r.models), note="the policy model of the row's runs"),
        Column("seeds", lambda r: str(len(r.seeds)), numeric=True,
               note="how many runs (one per seed) the row merges"),
        Column("final test acc. (%)", lambda r: percent(r.final_accuracy), numeric=True,
               note=f"the share of test episodes (tasks × samples) that {SUCCESS} at each run's last evaluation. "
                    "Nothing chose that evaluation by its score: this is the unbiased figure to compare methods by"),
        Column("max test acc. (%, optimistic)", lambda r: percent(r.max_test_accuracy), numeric=True,
               note="the highest test accuracy among each run's evaluations (the starting policy's included). "
                    "Taking the best evaluation by its test score selects on the test set, so it overstates what "
                    "the method would score on unseen tasks, and more so the more evaluations a run made; the runs "
                    "record no validation split to select on instead. Read final test acc. for the unbiased figure"),
    ]
    for key in board.pass_keys:
        columns.append(Column(f"{key} (%)", lambda r, key=key: percent(r.pass_at.get(key)), numeric=True,
                              note=_pass_note(key)))
    columns += [
        Column("test eval (tasks × samples)", eval_size, numeric=True,
               note="the size of the test evaluations behind the accuracy and pass@k columns: tasks × samples per "
                    "task, whose product is the number of episodes; several when the row's runs or evaluations "
                    "differ; ? stands for a run that did not record it"),
        Column("train rollouts", lambda r: count(r.budget["train_rollouts"]), numeric=True,
               note="training episodes per run (test evaluations not counted)"),
        Column("generated tokens", lambda r: count(r.budget["total_generated_tokens"]), numeric=True,
               note="tokens generated per run in training, evaluation and the reflector's replies (prompts not counted)"),
        Column("reflector calls", lambda r: count(r.budget["reflector_calls"]), numeric=True,
               note="calls to the reflector LLM per run (mutation, crossover, GEPA's reflection)"),
        Column("reflector tokens", lambda r: count(r.budget["reflector_tokens"]), numeric=True,
               note="the reflector's prompt plus completion tokens per run"),
        Column("children", lambda r: count(r.budget["children"]), numeric=True,
               note="prompts created per run by the method's operators (mutation, crossover, the candidates GEPA accepted), "
                    "the seed prompts not counted; a prompt-evolving row with 0 evaluated its seed prompt"),
        Column("wall time (s)", lambda r: seconds(r.wall_s), numeric=True, note="wall-clock seconds per run"),
        Column("hardware", lambda r: "; ".join(r.hardware) + " / torch " + ", ".join(r.torch),
               note="the machine (its GPU, or its CPU cores rather than the threads a run used) and the torch version"),
        Column("commit", lambda r: ", ".join(r.git_commits),
               note="the git commit the runs were made at (-dirty: with uncommitted changes)"),
    ]
    return columns


def to_csv(board: Leaderboard) -> str:
    """Machine-readable: raw means and standard errors (empty when one seed), and the evaluation
    size beside the accuracies (`24x2`: tasks x samples per task; `;` between several)."""
    header = ["env", "method", "model", "seeds", "n_seeds", "eval_tasks_x_samples", "eval_n_tasks", "eval_episodes"]
    metrics = ["final_accuracy", "max_test_accuracy", *board.pass_keys,
               *(f"budget.{name}" for name in _budget_names(board)), "wall_s"]
    for name in metrics:
        header += [f"{name}_mean", f"{name}_se"]
    header += ["hardware", "torch", "git_commits"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in board.rows:
        unknown = ["?"] if row.runs_without_eval_size else []
        values: list[object] = [
            row.env, row.method, ";".join(row.models), ";".join(map(str, row.seeds)), len(row.seeds),
            eval_size(row, "x", ";"), ";".join([*(str(s.n_tasks) for s in row.eval_sizes), *unknown]),
            ";".join([*(str(s.episodes) for s in row.eval_sizes), *unknown]),
        ]
        estimates = [row.final_accuracy, row.max_test_accuracy, *(row.pass_at.get(k) for k in board.pass_keys),
                     *(row.budget[name] for name in _budget_names(board)), row.wall_s]
        for value in estimates:
            values += [_number(value.mean if value else None), _number(value.se if value else None)]
        values += [";".join(row.hardware), ";".join(row.torch), ";".join(row.git_commits)]
        writer.writerow(values)
    return buffer.getvalue()


def _pass_note(key: str) -> str:
    k = key.partition("@")[2]
    if k == "1":
        chance = f"the share of its samples that {SUCCESS}"
    else:
        chance = f"the chance that at least one of {k} samples, drawn without replacement from its samples, {SUCCESS}"
    return (f"the unbiased {key} estimate (Chen et al., 2021) at each run's last evaluation: per task, {chance}; "
            "averaged over tasks")


def _budget_names(board: Leaderboard) -> list[str]:
    return list(board.rows[0].budget) if board.rows else []


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"
