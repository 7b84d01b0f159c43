"""`espl-bench run`: train one method on one env and write a run directory.

    espl-bench run --env hotpotqa --method espl                 # the embedded default
    espl-bench run --env gsm8k --method rl --preset smoke --set rl.lr=1e-5
    espl-bench run --resume runs/hotpotqa--espl--smollm2-135m/20261121-120000
    espl-bench run --resume runs/gsm8k--rl--smollm2-135m/20261121-120000 --iterations 40   # extend it
    espl-bench run --resume DIR --set 'policy.base_urls=["http://127.0.0.1:8003"]'   # on servers started again
    espl-bench run --env gsm8k --preset smoke --dry-run --write-config mine.toml   # then --preset mine.toml
    espl-bench run --env gsm8k --method rl --report-to tensorboard,wandb   # experiment tracking
    torchrun --standalone --nproc-per-node 2 -m espl.cli run --preset smoke   # the trainer on 2 ranks

Under `torchrun` rank 0 runs this command as one process would (and alone prints and writes);
the other ranks only train with it (`espl.run.ranks`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from espl.run.ranks import Followers


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", help="env id or alias (default: hotpotqa)")
    parser.add_argument("--method", help="espl | rl | evolution | reflect | gepa | base (default: espl)")
    parser.add_argument("--preset", default="default", help="smoke | default | paper, or a TOML file")
    parser.add_argument("--model", help="built-in name, local folder or hub id")
    parser.add_argument("--engine", help="a registered engine: hf | vllm | openai")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--iterations", type=int,
                        help="iterations in all; with --resume, extends the run to this many (espl.run.extension)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="dotted config override, e.g. rl.lr=1e-5 (repeatable); with --resume only the "
                             "servers' addresses: policy.base_urls, env.retriever_url, evolution.reflector.base_urls")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<env>--<method>--<model>/<time>)")
    parser.add_argument("--resume", type=Path, help="continue the run in this directory")
    parser.add_argument("--report-to", dest="report_to", type=report_to_list, metavar="NAMES",
                        help="experiment trackers, comma-separated: tensorboard, wandb, mlflow, or none "
                             "(config key report_to; default: none). Also allowed with --resume")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--write-config", dest="write_config", type=Path, metavar="PATH.toml",
                        help="with --dry-run: also write the resolved config as TOML (a new file), "
                             "which --preset PATH.toml reads back")
    parser.add_argument("--quiet", action="store_true",
                        help="one plain line per iteration instead of the live line (the default when stdout is not a terminal)")


def resolve_config(args: argparse.Namespace):
    """The config to run: from the flags and preset, or a resumed run's own (see the module doc).

    With --resume, --iterations gives the count to extend to; the run directory's progress is
    checked against it in `run` (`espl.run.extension.plan_extension`). --set may then give the
    servers' new addresses, and nothing else (`espl.run.addresses`)."""
    import dataclasses

    from espl.config import ConfigError, load_config

    if args.resume is not None:
        given = [flag for flag, value in (("--env", args.env), ("--method", args.method), ("--model", args.model),
                 ("--engine", args.engine), ("--seed", args.seed), ("--out", args.out))
                 if value is not None]  # --seed 0 counts too
        if given or args.preset != "default":
            flags = ", ".join(given + (["--preset"] if args.preset != "default" else []))
            raise ConfigError(f"--resume continues a run with its own config.json; {flags} would be ignored")
        config = recorded_config(args.resume)
        if args.overrides:  # where its servers now are, not what it does
            from espl.run.addresses import with_new_addresses

            config = with_new_addresses(config, args.overrides)
        if args.report_to is not None:  # where the run is reported, not what it does
            config.report_to = args.report_to
        if args.iterations is not None:  # more of the same run (checked by espl.run.extension)
            config = dataclasses.replace(config, iterations=args.iterations)
        return config
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
    if args.report_to is not None:
        base["report_to"] = args.report_to
    return load_config(args.preset, args.overrides, base)


def recorded_config(run_dir: Path):
    """The config a run directory records (`config.json`), checked; ConfigError when it has none."""
    import json

    from espl.config import ConfigError, RunConfig, build

    path = run_dir / "config.json"
    try:
        return build(RunConfig, json.loads(path.read_text()))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: {run_dir} is not a run directory") from None
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def report_to_list(text: str) -> list[str]:
    """`tensorboard,wandb` -> ["tensorboard", "wandb"] (checked with the rest of the config)."""
    return [name.strip() for name in text.split(",") if name.strip()]


def default_run_dir(config) -> Path:
    import time

    model = Path(config.policy.model).name
    return Path("runs") / f"{config.env.name}--{config.method}--{model}" / time.strftime("%Y%m%d-%H%M%S")


def run(args: argparse.Namespace) -> int:
    from espl.rl.distributed import DistributedContext

    ranks = DistributedContext.from_environment()
    if not ranks.is_main:
        from espl.run.ranks import follow

        try:
            return follow(ranks)
        finally:
            ranks.close()
    followers = None
    if ranks.enabled:
        from espl.run.ranks import Followers

        followers = Followers(ranks)
    code = 1
    try:
        code = run_main(args, followers)
        return code
    finally:
        if followers is not None:
            followers.stop(code)
        ranks.close()


def run_main(args: argparse.Namespace, followers: Followers | None = None) -> int:
    """The run as one process (or rank 0, with the other ranks as `followers`) does it."""
    import json

    from rich.console import Console

    from espl.config import ConfigError
    from espl.run.resume import RunDirError

    console = Console()
    extension = None
    try:
        if args.write_config is not None and not args.dry_run:
            raise ConfigError("--write-config goes with --dry-run (a run keeps its config in config.json)")
        config = resolve_config(args)
        from espl.run.kept_precision import plan_kept_run
        from espl.run.run_dir import RunDir

        # every cross-check, before a directory or a model exists; a resumed run keeps its precision
        plan, precision_note = plan_kept_run(config, None if args.resume is None else RunDir(args.resume))
        if plan.trainer is not None and plan.trainer.fsdp and followers is None and not args.dry_run:
            from espl.rl.distributed import DistributedContext
            from espl.rl.sharding import check_sharding

            try:
                check_sharding(plan.trainer, DistributedContext())
            except ValueError as error:
                raise ConfigError(str(error)) from None
        if args.resume is not None and args.iterations is not None:
            from espl.run.extension import plan_extension

            extension = plan_extension(RunDir(args.resume), config, args.iterations)
        if args.dry_run and args.write_config is not None:
            from espl.config_toml import write_config_toml

            written = write_config_toml(config, args.write_config)
    except (ConfigError, FileNotFoundError, RunDirError) as error:
        kind = "error" if isinstance(error, RunDirError) else "config error"  # a damaged run directory
        console.print(f"[red]{kind}:[/red] {error}", highlight=False, soft_wrap=True)
        return 2
    if args.dry_run:
        console.print_json(json.dumps(config.to_dict()))
        if args.write_config is not None:
            console.print(f"config written to {written}; run it with --preset {written}", highlight=False, soft_wrap=True)
        return 0
    if extension is not None and extension.nothing_to_do:
        console.print(f"nothing to do: {args.resume} has completed its {extension.done} iteration(s) "
                      f"(--iterations {args.iterations}); give a larger --iterations to extend it", highlight=False,
                      soft_wrap=True)
        return 0

    from agents.models import ModelUnavailable
    from espl.progress import LiveProgress
    from espl.run.run_dir import CONFIG, RunDir
    from espl.run.train import run_training

    run_dir = RunDir(args.resume or args.out or default_run_dir(config))
    if args.resume is None:
        taken = existing_run(run_dir.path)
        if taken:
            console.print(f"[red]error:[/red] {run_dir.path} already holds a run ({taken}); continue it with "
                          f"--resume {run_dir.path}, or choose another --out", highlight=False, soft_wrap=True)
            return 2
        fresh_dir = not run_dir.path.exists()
        run_dir.create().write_json(CONFIG, config.to_dict())
    elif extension is not None:
        from espl.run.extension import apply_extension

        config = apply_extension(run_dir, config, extension)
    if args.resume is not None and args.overrides:
        run_dir.write_json(CONFIG, config.to_dict())  # the run now samples there
    console.print(f"run directory: [bold]{run_dir.path}[/bold]", highlight=False, soft_wrap=True)
    if plan.precision is not None:
        console.print(f"policy model: {plan.precision.describe()}", highlight=False, soft_wrap=True)
    if precision_note is not None:
        console.print(precision_note, highlight=False, soft_wrap=True)
    try:
        with LiveProgress(console, total=config.iterations, quiet=args.quiet) as progress:
            summary = run_training(config, run_dir, observer=progress.update, status=progress.status,
                                   followers=followers)
    except (RunDirError, ModelUnavailable) as error:
        console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        if isinstance(error, ModelUnavailable) and args.resume is None:
            forget_unstarted_run(run_dir.path, fresh_dir)
        return 2
    progress.print_summary(summary, run_dir.path)
    return 0


RUN_FILES = ("config.json", "metrics.jsonl", "rollouts.jsonl", "prompts.jsonl", "summary.json", "checkpoint")


def forget_unstarted_run(path: Path, fresh_dir: bool) -> None:
    """Take back the `config.json` of a run whose model never loaded, so that the same `--out`
    can be used again once the model is there. Only what this command wrote goes: the config,
    and the directory if this command made it and nothing else is in it."""
    if existing_run(path) != "config.json":
        return  # the run got further than its config: keep it
    (path / "config.json").unlink()
    if fresh_dir and not any(path.iterdir()):
        path.rmdir()


def existing_run(path: Path) -> str:
    """The run files `path` already holds ("" when none): `--out` never relabels a run."""
    return ", ".join(name for name in RUN_FILES if (path / name).exists())
