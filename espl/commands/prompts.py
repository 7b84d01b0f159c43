"""`espl-bench prompts`: the prompt population of a run, rebuilt from its directory alone.

    espl-bench prompts runs/suites/math-cpu/gsm8k--espl--seed0          # current members
    espl-bench prompts RUN_DIR --all                                    # every prompt ever created
    espl-bench prompts RUN_DIR --json > prompts.json

Shows each prompt's id, operator, parents, creation step, latest TrueSkill mu/sigma and
conservative score (mu - 2 sigma), the lineage of the evaluated prompt, and its principles.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a run directory (holds prompts.jsonl)")
    parser.add_argument("--all", action="store_true", help="every prompt ever created, evicted ones included")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    try:
        view = build_view(args.run_dir, include_evicted=args.all)
    except (FileNotFoundError, ValueError) as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True)
        return 2
    if args.json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
    else:
        print_view(console, view)
    return 0


def build_view(run_dir: Path, include_evicted: bool = False) -> dict[str, Any]:
    """Everything the command shows, as plain data (the --json output)."""
    from espl.leaderboard.lineage import build_lineage
    from espl.evolution.prompt_log import load_prompt_log
    from espl.evolution.rating import conservative_score
    from espl.run.run_dir import PROMPTS, SUMMARY
    from espl.evolution.selection import choose_eval_prompt

    log = run_dir / PROMPTS
    if not log.exists():
        raise FileNotFoundError(f"{run_dir} has no {PROMPTS}: not a run directory, or the run never started")
    population = load_prompt_log(log)
    members = population.member_ids
    ratings = population.ratings(members)
    summary_file = run_dir / SUMMARY
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    eval_id = (summary.get("eval_prompt") or {}).get("id") or choose_eval_prompt(members, ratings, _eval_rule(run_dir))
    best_id = choose_eval_prompt(members, ratings, "best")
    shown = population.archive() if include_evicted else list(population)
    prompts = []
    for prompt in shown:
        rating = prompt.rating
        prompts.append({
            "id": prompt.id,
            "member": prompt.id in population,
            "operator": prompt.operator,
            "parents": list(prompt.parents),
            "step": prompt.created_step,
            "evicted_step": prompt.evicted_step,
            "mu": None if rating is None else rating.mu,
            "sigma": None if rating is None else rating.sigma,
            "conservative": None if rating is None else conservative_score(rating),
            "principles": list(prompt.principles),
        })
    lineage = build_lineage(population, eval_id)
    return {
        "run_dir": str(run_dir),
        "method": summary.get("method"),
        "env": summary.get("env"),
        "finished": bool(summary),
        "members": len(members),
        "created": len(population.archive()),
        "eval_prompt": eval_id,
        "best_prompt": best_id,
        "prompts": prompts,
        "lineage": {"prompt_id": eval_id, "edges": [list(e) for e in lineage.edges], "tree": lineage.text_tree()},
        "principles": {pid: list(population.get(pid).principles) for pid in dict.fromkeys([eval_id, best_id])},
    }


def print_view(console, view: dict[str, Any]) -> None:
    from rich.table import Table

    state = "finished" if view["finished"] else "not finished"
    console.print(
        f"[bold]{view['run_dir']}[/bold] ({view['method'] or '?'} on {view['env'] or '?'}, {state}): "
        f"{view['members']} members, {view['created']} prompts created"
    )
    table = Table()
    for name in ("id", "operator", "parents", "step", "mu", "sigma", "mu-2sigma", "status"):
        table.add_column(name, justify="right" if name in ("step", "mu", "sigma", "mu-2sigma") else "left")
    for p in view["prompts"]:
        marks = [m for m, on in (("evaluated", p["id"] == view["eval_prompt"]), ("best", p["id"] == view["best_prompt"])) if on]
        status = "member" if p["member"] else f"evicted@{p['evicted_step']}"
        table.add_row(
            p["id"], p["operator"], ", ".join(p["parents"]) or "-", str(p["step"]), _number(p["mu"]),
            _number(p["sigma"]), _number(p["conservative"]), ", ".join([status, *marks]),
        )
    console.print(table)
    console.print(f"\n[bold]lineage of the evaluated prompt {view['eval_prompt']}[/bold] (each parent under its child):")
    for line in view["lineage"]["tree"]:
        console.print("  " + line, markup=False, highlight=False)
    for prompt_id, principles in view["principles"].items():
        roles = [r for r, pid in (("evaluated", view["eval_prompt"]), ("best by mu - 2 sigma", view["best_prompt"])) if pid == prompt_id]
        console.print(f"\n[bold]principles of {prompt_id}[/bold] ({', '.join(roles)}):")
        for index, principle in enumerate(principles):
            console.print(f"  G{index}. {principle}", markup=False, highlight=False)


def _eval_rule(run_dir: Path) -> str:
    """The run's `evolution.eval_prompt` (what its evaluations used)."""
    from espl.run.run_dir import CONFIG

    config_file = run_dir / CONFIG
    if not config_file.exists():
        return "best"
    config = json.loads(config_file.read_text())
    return str((config.get("evolution") or {}).get("eval_prompt", "best"))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
