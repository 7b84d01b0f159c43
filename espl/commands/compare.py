"""`espl-bench compare`: run a comparison suite's missing runs, then write its leaderboard.

    espl-bench compare --suite espl/suites/math-cpu.toml            # or just: --suite math-cpu
    espl-bench compare --suite math-cpu --dry-run                         # show what would run
    espl-bench compare --suite math-cpu --jobs 2                          # two runs at a time
    espl-bench compare --suite math-cpu --report-to tensorboard           # each run it makes is tracked
    espl-bench compare --suite my-fleet-suite --jobs 4 --base-urls http://127.0.0.1:8001,http://127.0.0.1:8002

Finished runs are skipped and half-finished ones resume from their checkpoint, so the command
can be stopped and started again at will; on a finished suite it runs nothing and rewrites
identical leaderboard files (`leaderboards/<suite>.md|.csv|.html` and `leaderboards/<suite>/`).

`--base-urls` puts every run of a suite whose `policy.engine` is `fleet` on the same servers;
each run names its adapter versions after its own directory (`espl.run.builder.adapter_prefix`),
so runs sharing a fleet never load, use or unload each other's versions. The addresses are
not part of what a run did: a fleet started again elsewhere leaves finished runs finished.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

LOG = "compare.log"
"""Output of the run's process, kept in its run directory."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--suite", required=True, help="suite TOML file, or the name of one in espl/suites/")
    parser.add_argument("--root", type=Path, default=Path("runs") / "suites",
                        help="where run directories go: <root>/<suite>/<env>--<method>--seed<k> (default: runs/suites)")
    parser.add_argument("--out-dir", type=Path, default=Path("leaderboards"), help="leaderboard folder (default: leaderboards)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own process (default: 1)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan (finished / partial / missing / stale) and exit")
    parser.add_argument("--replace-stale", action="store_true",
                        help="move runs made with another config aside (<dir>.stale-N) and run them again")
    parser.add_argument("--quiet", action="store_true", help="no live progress bar")
    parser.add_argument("--report-to", dest="report_to", metavar="NAMES",
                        help="experiment trackers for the runs it makes, comma-separated (see `espl-bench run --help`)")
    parser.add_argument("--base-urls", dest="base_urls", metavar="URLS",
                        help="the vLLM servers every run shares, comma-separated (policy.base_urls; the suite's "
                             "policy.engine must be fleet). `espl-bench launch --suite` starts them and passes this")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from espl.config import ConfigError, preset_names
    from espl.run.plan import plan_run
    from espl.suite import RunStatus, SuiteError, load_suite, on_fleet, plan

    console = Console()
    if args.jobs < 1:
        console.print("[red]error:[/red] --jobs must be at least 1")
        return 2
    try:
        suite = load_suite(args.suite)
        if args.base_urls:
            suite = on_fleet(suite, [url.strip() for url in args.base_urls.split(",") if url.strip()])
        planned = plan(suite, args.root)
        for item in planned:  # every run's config is checked before any of them starts
            plan_run(item.spec.config)
        if args.report_to is not None:
            from espl.commands.run import report_to_list
            from espl.tracking import TrackingError, check_report_to

            try:
                check_report_to(report_to_list(args.report_to))
            except TrackingError as error:
                raise ConfigError(f"--report-to: {error}") from None
    except (SuiteError, ConfigError) as error:
        console.print(f"[red]suite error:[/red] {error}", soft_wrap=True)
        return 2
    print_plan(console, suite.name, planned)
    console.print(f"preset: {suite.preset} (built-in presets: {', '.join(preset_names())})", highlight=False)
    stale = [p.spec for p in planned if p.status is RunStatus.STALE]
    if stale and not args.replace_stale and not args.dry_run:
        explain_stale(console, stale)
        return 2
    if args.dry_run:
        return 0
    for spec in stale:
        move_aside(spec.run_dir)
    todo = [p.spec for p in planned if p.status is not RunStatus.FINISHED]
    failures = execute(todo, args.jobs, console, quiet=args.quiet, report_to=args.report_to) if todo else {}
    if not todo:
        console.print("every run is finished: nothing to run")
    for label, error in failures.items():
        console.print(f"[red]run {label} failed:[/red] {error}", soft_wrap=True)
    finished = [p.spec.run_dir for p in plan(suite, args.root) if p.status is RunStatus.FINISHED]
    if finished:
        from espl.commands.leaderboard import print_written
        from espl.leaderboard import write_leaderboard

        print_written(console, write_leaderboard(finished, args.out_dir / suite.name, suite.name))
    return 1 if failures else 0


def print_plan(console, suite_name: str, planned: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"suite {suite_name}")
    table.add_column("run")
    table.add_column("status")
    colours = {"finished": "green", "partial": "yellow", "missing": "white", "stale": "red"}
    for item in planned:
        status = item.status.value
        table.add_row(str(item.spec.run_dir), f"[{colours[status]}]{status}[/]")
    console.print(table)


def explain_stale(console, stale: Sequence[Any]) -> None:
    import json

    from espl.run.run_dir import CONFIG
    from espl.suite import config_diff

    for spec in stale:
        try:
            stored = json.loads((spec.run_dir / CONFIG).read_text())
        except json.JSONDecodeError:
            stored = {}
        changes = config_diff(spec.expected_config(), stored)
        console.print(f"[red]stale:[/red] {spec.run_dir} ran with another config: " + "; ".join(changes[:6]), soft_wrap=True)
    console.print("rerun with --replace-stale to move these aside and run them again")


def move_aside(run_dir: Path) -> Path:
    """Keep an outdated run (renamed), never delete it."""
    index = 1
    while (target := run_dir.with_name(f"{run_dir.name}.stale-{index}")).exists():
        index += 1
    run_dir.rename(target)
    return target


def command_for(spec: Any, report_to: str | None = None) -> list[str]:
    """`espl-bench run --resume DIR`: starts the run when DIR has no checkpoint, resumes it otherwise."""
    tracking = [] if report_to is None else ["--report-to", report_to]
    return [sys.executable, "-m", "espl.cli", "run", "--resume", str(spec.run_dir), "--quiet", *tracking]


def execute(specs: Sequence[Any], jobs: int, console, quiet: bool = False, report_to: str | None = None) -> dict[str, str]:
    """Run the specs, `jobs` at a time, each in its own `espl-bench run` process.

    A process per run keeps runs apart (model memory, worker pools, local retrieval servers are
    all released at its exit) and lets the bar follow each run's metrics.jsonl as it grows.
    """
    from concurrent.futures import ThreadPoolExecutor

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from espl.run.run_dir import CONFIG, METRICS

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(), console=console, disable=quiet,
    )
    failures: dict[str, str] = {}
    threads = max(1, (os.cpu_count() or 1) // jobs)
    with progress, ThreadPoolExecutor(max_workers=jobs) as pool:
        overall = progress.add_task("runs", total=len(specs), info=f"{min(jobs, len(specs))} at a time")
        tasks: dict[str, Any] = {}

        def run_one(spec: Any) -> None:
            spec.run_dir.mkdir(parents=True, exist_ok=True)
            (spec.run_dir / CONFIG).write_text(json.dumps(spec.expected_config(), indent=2, default=str) + "\n")
            tasks[spec.label] = progress.add_task(f"  {spec.label}", total=max(spec.config.iterations, 1), info="")
            error = _run_process(spec, threads, report_to)
            if error:
                failures[spec.label] = error
            progress.remove_task(tasks.pop(spec.label))
            progress.advance(overall)
            if quiet:
                console.print(f"{spec.label}: {'failed' if error else 'done'}")

        futures = [pool.submit(run_one, spec) for spec in specs]
        while not all(f.done() for f in futures):
            for spec in specs:
                if spec.label in tasks:
                    progress.update(tasks[spec.label], completed=_iterations_done(spec.run_dir / METRICS))
            time.sleep(0.5)
        for future in futures:
            future.result()
    return failures


def _run_process(spec: Any, threads: int, report_to: str | None = None) -> str | None:
    """Run one spec to completion; the error (with the log's tail) when it fails."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    log_path = spec.run_dir / LOG
    with log_path.open("ab") as log:
        code = subprocess.run(command_for(spec, report_to), stdout=log, stderr=subprocess.STDOUT, env=env, check=False).returncode
    if code == 0:
        return None
    tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
    return f"exit code {code}; end of {log_path}:\n" + "\n".join(tail)


def _iterations_done(metrics: Path) -> int:
    """Iterations logged so far (line 0 is the initial evaluation)."""
    try:
        with metrics.open("rb") as handle:
            return max(sum(1 for _ in handle) - 1, 0)
    except FileNotFoundError:
        return 0
