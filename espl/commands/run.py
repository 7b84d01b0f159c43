"""`espl-bench run`: train one method on one env and write a run directory.

    espl-bench run --env hotpotqa --method espl                 # the embedded default
    espl-bench run --env gsm8k --method rl --preset smoke --set rl.lr=1e-5
    espl-bench run --resume runs/hotpotqa--espl--smollm2-135m/20261121-120000
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", help="env id or alias (default: hotpotqa)")
    parser.add_argument("--method", help="espl | rl | evolution | reflect | gepa | base (default: espl)")
    parser.add_argument("--preset", default="default", help="smoke | default | paper, or a TOML file")
    parser.add_argument("--model", help="built-in name, local folder or hub id")
    parser.add_argument("--engine", choices=["hf", "vllm", "openai"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--iterations", type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. rl.lr=1e-5 (repeatable)")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<env>--<method>--<model>/<time>)")
    parser.add_argument("--resume", type=Path, help="continue the run in this directory")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--quiet", action="store_true", help="no live progress")


def resolve_config(args: argparse.Namespace):
    import json

    from espl.config import build, load_config, RunConfig

    if args.resume is not None:
        return build(RunConfig, json.loads((args.resume / "config.json").read_text()))
    base: dict = {}
    if args.env:
        base.setdefault("env", {})["name"] = args.env
    if args.method:
        base["method"] = args.method
    if args.model:
        base.setdefault("policy", {})["model"] = args.model
    if args.engine:
        base.setdefault("policy", {})["engine"] = args.engine
    if args.seed is not None:
        base["seed"] = args.seed
    if args.iterations is not None:
        base["iterations"] = args.iterations
    return load_config(args.preset, args.overrides, base)


def default_run_dir(config) -> Path:
    import time

    model = Path(config.policy.model).name
    return Path("runs") / f"{config.env.name}--{config.method}--{model}" / time.strftime("%Y%m%d-%H%M%S")


def run(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    from espl.config import ConfigError

    console = Console()
    try:
        config = resolve_config(args)
        from espl.methods import get_method

        get_method(config.method)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        console.print(f"[red]config error:[/red] {error}")
        return 2
    if args.dry_run:
        console.print_json(json.dumps(config.to_dict()))
        return 0

    from espl.progress import LiveProgress
    from espl.run.run_dir import CONFIG, RunDir
    from espl.run.train import run_training

    run_dir = RunDir(args.resume or args.out or default_run_dir(config)).create()
    if args.resume is None:
        run_dir.write_json(CONFIG, config.to_dict())
    console.print(f"run directory: [bold]{run_dir.path}[/bold]")
    with LiveProgress(console, total=config.iterations, quiet=args.quiet) as progress:
        summary = run_training(config, run_dir, observer=progress.update, status=progress.status)
    progress.print_summary(summary, run_dir.path)
    return 0
