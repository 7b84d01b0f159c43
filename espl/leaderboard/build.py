"""Build every leaderboard artefact from runs: `<out>.md`, `<out>.csv`, `<out>.html`, `<out>/*.png|svg`.

The output depends only on the run directories (no clock, no absolute paths), so building it
twice from the same runs gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from espl.leaderboard.collect import RunRecord, find_run_dirs, load_runs
from espl.leaderboard.columns import to_csv
from espl.leaderboard.curves import mean_curve
from espl.leaderboard.html import render_html
from espl.leaderboard.lineage import best_evolved_lineage
from espl.leaderboard.markdown import render_markdown
from espl.leaderboard.report import EnvSection, Figure, Report
from espl.leaderboard.table import LeaderboardRow, build_leaderboard


def build_report(runs: Sequence[RunRecord], out: Path, title: str) -> Report:
    """Aggregate the runs and draw the figures (under `<out>/`)."""
    from espl.leaderboard import plots

    board = build_leaderboard(runs, title)
    asset_dir = out.parent / out.name
    evolving = {row.method for row in board.rows if any(int(r.summary.get("prompts_created", 1)) > 1 for r in row.runs)}
    sections = []
    for env in board.envs:
        rows = board.rows_for(env)
        ordered = sorted(rows, key=lambda r: r.method)
        figures = {}
        for metric, label, percent in (("accuracy", "test accuracy (%)", True), ("train_reward", "train reward", False)):
            curves = [c for r in ordered if (c := mean_curve(r.runs, metric, f"{r.method} (n={len(r.seeds)})"))]
            if curves:
                name = "accuracy" if metric == "accuracy" else "reward"
                stem = asset_dir / f"{name}-{_slug(env)}"
                heading = f"{env}: {label} vs iteration (mean ± s.e. over seeds)"
                size = f"test eval {_eval_sizes(rows)} (tasks × samples)" if metric == "accuracy" else ""
                title = f"{heading}\n{size}" if size else heading  # two lines: one would not fit the figure
                plots.save(plots.curve_figure(curves, title, label, percent), stem)
                figures[name] = Figure(stem, f"{heading}, {size}" if size else heading)
        lineage = best_evolved_lineage(board, env, sorted(evolving))
        lineage_figure, note = None, None
        if lineage is not None and lineage.run is not None:
            heading = f"{env}: lineage of {lineage.prompt_id} ({lineage.run.method}, seed {lineage.run.seed})"
            stem = asset_dir / f"lineage-{_slug(env)}"
            plots.save(plots.lineage_figure(lineage, heading), stem)
            lineage_figure = Figure(stem, heading)
        elif evolved_here := sorted(evolving & {row.method for row in rows}):
            note = (f"No run of the prompt-evolving methods ({', '.join(evolved_here)}) evaluated a prompt with a "
                    "parent: each evaluated its seed prompt, so there is no lineage to show.")
        sections.append(EnvSection(env, figures.get("accuracy"), figures.get("reward"), lineage, lineage_figure, note))
    return Report(board, out, tuple(sections))


def write_report(report: Report) -> list[Path]:
    report.out.parent.mkdir(parents=True, exist_ok=True)
    contents = {".md": render_markdown(report), ".csv": to_csv(report.board), ".html": render_html(report)}
    written = []
    for suffix, text in contents.items():
        path = report.out.with_suffix(suffix)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def write_leaderboard(run_paths: Sequence[str | Path], out: str | Path, title: str | None = None) -> Report:
    """Find the runs, aggregate them and write every artefact; returns the report."""
    out = Path(out)
    if out.suffix in (".md", ".html", ".csv"):
        out = out.with_suffix("")
    runs = load_runs(find_run_dirs(run_paths))
    report = build_report(runs, out, title or out.name)
    write_report(report)
    return report


def _eval_sizes(rows: Sequence[LeaderboardRow]) -> str:
    """The test evaluation sizes behind an env's accuracy curves, as its table shows them."""
    sizes = sorted({size for row in rows for size in row.eval_sizes})
    unknown = ["?"] if any(row.runs_without_eval_size for row in rows) else []
    return ", ".join([*(size.label() for size in sizes), *unknown])


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
