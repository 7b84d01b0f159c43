"""Leaderboards from run directories: tables (markdown, CSV, HTML), learning curves and the
lineage of the best evolved prompt. See `build.write_leaderboard`."""

from espl.leaderboard.build import Report, build_report, write_leaderboard, write_report
from espl.leaderboard.collect import NoRunsError, RunRecord, find_run_dirs, load_run, load_runs

__all__ = [
    "NoRunsError", "Report", "RunRecord", "build_report", "find_run_dirs", "load_run", "load_runs",
    "write_leaderboard", "write_report",
]
