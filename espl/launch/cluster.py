"""One launch on a Ray cluster: reserve every part at once, start the servers, wait until they
answer, run the trainer against them, and stop everything this launch started.

The order matters: the placement group reserves all bundles together (gang scheduling), so a
launch never holds half its GPUs while waiting for the rest; the trainer starts only once
every server answers its health check, with their addresses in its command; and teardown
runs on any exit (the trainer's end, an error, Ctrl-C), ending each part's own process group
and nothing else, then releasing the actors and the placement group. Every wait is bounded
(`Timeouts`). Ray must already be initialised (`ray.init`): the command does that.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from espl.launch.logs import LogPump
from espl.launch.parts import RETRIEVER, TRAINER, Layout, LaunchError, Part, TrainerCommand

INTERRUPTED = 130
"""The exit code of a launch stopped by Ctrl-C (as a shell reports SIGINT)."""


@dataclass(frozen=True)
class Timeouts:
    placement: float = 600.0
    """Seconds for the cluster to find room for every bundle."""
    health: float = 1800.0
    """Seconds for each server to answer its health check (a large model loads slowly)."""
    call: float = 120.0
    """Seconds for any one call to an actor (its start included)."""
    stop: float = 30.0
    """Seconds a part has to exit after SIGTERM before it is killed."""


@dataclass
class LaunchReport:
    """What the launch did: where each part ran, what it ran, how it ended, where its log is."""

    exit_code: int = 1
    error: str | None = None
    placements: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopped: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


def launch(
    layout: Layout, trainer_command: TrainerCommand, *, log_dir: Path, cwd: str | None = None,
    timeouts: Timeouts = Timeouts(), stream: IO[str] | None = None, say: Callable[[str], None] = print,
) -> LaunchReport:
    """Run `layout` to the trainer's end; the report's `exit_code` is the trainer's (1 with an
    `error` when the launch failed, 130 on Ctrl-C). The trainer's output goes to `stream` too
    (None: only to its log); `say` tells where each part is and when it is ready."""
    from ray.util.placement_group import placement_group, remove_placement_group

    log_dir.mkdir(parents=True, exist_ok=True)
    report = LaunchReport()
    pump = LogPump(log_dir, {TRAINER}, stream, timeouts.call)
    actors: dict[str, Any] = {}
    group = placement_group(layout.bundles(), strategy=layout.strategy, name=f"espl-launch-{secrets.token_hex(4)}")
    try:
        _place(layout, group, actors, pump, report, timeouts)
        _start_servers(layout, actors, pump, report, timeouts, cwd, say)
        report.exit_code = _run_trainer(layout, trainer_command, actors, pump, report, timeouts, cwd, say)
    except LaunchError as error:
        report.error = str(error)
    except KeyboardInterrupt:
        say("interrupted: stopping every part")
        report.exit_code = INTERRUPTED
    finally:
        _teardown(actors, pump, report, timeouts)
        remove_placement_group(group)
    return report


def _place(layout: Layout, group: Any, actors: dict[str, Any], pump: LogPump, report: LaunchReport,
           timeouts: Timeouts) -> None:
    import ray
    from ray import cloudpickle
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from espl.launch import host

    if not group.wait(timeouts.placement):
        raise LaunchError(f"the cluster found no room within {timeouts.placement:g} s for the bundles "
                          f"{layout.bundles()} ({layout.strategy}); `ray status` shows what it has")
    cloudpickle.register_pickle_by_value(host)  # the workers need Ray, not this project
    remote_host = ray.remote(host.ProcessHost)
    for index, part in enumerate(layout.parts):
        strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
        actors[part.name] = remote_host.options(num_cpus=part.cpus, num_gpus=part.gpus, max_concurrency=4,
                                                scheduling_strategy=strategy).remote(part.name)
        pump.add(part.name, actors[part.name])
        report.logs[part.name] = pump.path(part.name)
    placements = _get([actors[part.name].placement.remote() for part in layout.parts], timeouts.call, "placing the parts")
    report.placements = {placement["name"]: placement for placement in placements}
    _check_reachable(layout, report.placements)


def _check_reachable(layout: Layout, placements: dict[str, dict[str, Any]]) -> None:
    """Servers on loopback can only be reached from their own node: refuse a layout that put
    one elsewhere than the trainer, before anything starts."""
    if layout.bind != "loopback":
        return
    trainer_node = placements[layout.trainer.name]["node_ip"]
    elsewhere = sorted(f"{name} on {p['node_ip']}" for name, p in placements.items() if p["node_ip"] != trainer_node)
    if elsewhere:
        raise LaunchError(f"servers bind to loopback, but Ray placed {', '.join(elsewhere)} while the trainer is on "
                          f"{trainer_node}: pass --bind node-ip (servers listen on their node's address, with no "
                          "authentication), or --strategy STRICT_PACK to keep every part on one node")


def _start_servers(layout: Layout, actors: dict[str, Any], pump: LogPump, report: LaunchReport, timeouts: Timeouts,
                   cwd: str | None, say: Callable[[str], None]) -> None:
    """Start every part but the trainer, then wait for each to answer its health path."""
    parts = [part for part in layout.parts if part.role != TRAINER]
    started = _get([_start(actors[part.name], part, cwd, layout.bind) for part in parts], timeouts.call, "starting the servers")
    for part, info in zip(parts, started):
        report.started[part.name] = info
        say(f"{part.name}: {info['url']} on GPU(s) [{info['cuda_visible_devices']}]; log {pump.path(part.name)}")
    waits = {actors[part.name].wait_healthy.remote(part.health, timeouts.health): part for part in parts}
    deadline = time.monotonic() + timeouts.health + timeouts.call
    pending = list(waits)
    while pending:
        done, pending = _wait_one(pending)
        for ref in done:
            result = _get(ref, timeouts.call, f"waiting for {waits[ref].name}")
            if not result["ok"]:
                raise LaunchError(result["error"])
            say(f"{waits[ref].name}: ready after {result['seconds']} s")
        pump.pump()
        if pending and time.monotonic() > deadline:
            raise LaunchError(f"{', '.join(waits[ref].name for ref in pending)}: no answer within {timeouts.health:g} s")


def _run_trainer(layout: Layout, trainer_command: TrainerCommand, actors: dict[str, Any], pump: LogPump,
                 report: LaunchReport, timeouts: Timeouts, cwd: str | None, say: Callable[[str], None]) -> int:
    """Start the trainer with the servers' addresses and follow it to its end."""
    trainer = layout.trainer
    urls = [report.started[part.name]["url"] for part in layout.servers]
    retriever = next((report.started[part.name]["url"] for part in layout.parts if part.role == RETRIEVER), None)
    command = trainer_command(urls, retriever)
    trainer_part = Part(trainer.name, trainer.role, trainer.gpus, trainer.cpus, tuple(command), None, trainer.env)
    info = _get(_start(actors[trainer.name], trainer_part, cwd, "loopback"), timeouts.call, "starting the trainer")
    report.started[trainer.name] = info
    say(f"trainer: on GPU(s) [{info['cuda_visible_devices']}]; log {pump.path(trainer.name)}")
    gone: set[str] = set()
    while (code := _get(actors[trainer.name].poll.remote(), timeouts.call, "following the trainer")) is None:
        pump.pump()
        for name in report.started:  # a server that ends is the fleet's to work around; say so once
            if name != trainer.name and name not in gone:
                ended = _get(actors[name].poll.remote(), timeouts.call, f"checking {name}")
                if ended is not None:
                    gone.add(name)
                    say(f"warning: {name} exited with code {ended}; see {pump.path(name)}")
        time.sleep(1.0)
    pump.pump()
    return int(code)


def _teardown(actors: dict[str, Any], pump: LogPump, report: LaunchReport, timeouts: Timeouts) -> None:
    """Stop each part's process group, copy the last of its output, then end its actor."""
    import ray

    stops = {name: actor.stop.remote(timeouts.stop) for name, actor in actors.items()}
    for name, ref in stops.items():
        try:
            report.stopped[name] = ray.get(ref, timeout=timeouts.stop + timeouts.call)
        except (ray.exceptions.RayError, TimeoutError) as error:
            report.stopped[name] = {"error": f"could not stop {name}: {error}"}
    pump.pump()
    pump.close()
    cleanups = [actor.cleanup.remote() for actor in actors.values()]
    try:
        ray.get(cleanups, timeout=timeouts.call)
    except (ray.exceptions.RayError, TimeoutError):
        pass  # a temporary folder left on a node that stopped answering
    for actor in actors.values():
        ray.kill(actor)


def _start(actor: Any, part: Part, cwd: str | None, bind: str) -> Any:
    return actor.start.remote(list(part.command), dict(part.env), cwd, bind, max(int(part.cpus), 1))


def _wait_one(pending: list[Any]) -> tuple[list[Any], list[Any]]:
    import ray

    return ray.wait(pending, num_returns=1, timeout=1.0)


def _get(refs: Any, timeout: float, doing: str) -> Any:
    """`ray.get` with a bound; an actor that died or did not answer becomes a LaunchError."""
    import ray

    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.GetTimeoutError:
        raise LaunchError(f"{doing}: no answer within {timeout:g} s") from None
    except ray.exceptions.RayError as error:
        raise LaunchError(f"{doing}: {error}") from None
