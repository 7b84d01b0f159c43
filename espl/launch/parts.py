"""What a launch runs and what each part needs from the cluster (no Ray import here).

A part is one process tree: a vLLM server, the retrieval server, or the trainer. Its command
may hold ``{host}`` and ``{port}``, filled on the node Ray puts it on (the port is a free one
there, so parts that share a node never collide). The trainer's command is built only once
the servers answer, since it needs their addresses (`TrainerCommand`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
"""Ray's placement strategies: PACK fills as few nodes as it can (one node when it fits),
SPREAD puts bundles on distinct nodes where it can; the STRICT_ forms refuse otherwise."""

BINDS = ("loopback", "node-ip")
"""Where servers listen: 127.0.0.1 (only processes on the same node reach them), or the
address of the node Ray put them on (reachable across nodes, and by anyone on that network:
the servers have no authentication)."""

SERVER, RETRIEVER, TRAINER = "server", "retriever", "trainer"

TrainerCommand = Callable[[Sequence[str], "str | None"], list[str]]
"""(server URLs, retrieval server URL or None) -> the trainer's command line."""


class LaunchError(RuntimeError):
    """A launch that cannot go on: no room on the cluster, a part that died or never answered."""


@dataclass(frozen=True)
class Part:
    name: str
    """Unique in the launch (`server-0`, `retriever`, `trainer`): its log is `<name>.log`."""
    role: str
    gpus: int
    cpus: float
    command: tuple[str, ...] = ()
    """Servers: the command line, with ``{host}`` / ``{port}``; the trainer's is built later."""
    health: str | None = None
    """The path that answers 200 once a server is ready; None for the trainer."""
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layout:
    """Every part of a launch, servers first, and how their bundles are spread."""

    parts: tuple[Part, ...]
    strategy: str = "PACK"
    bind: str = "loopback"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.bind not in BINDS:
            raise ValueError(f"bind must be one of {', '.join(BINDS)}, got {self.bind!r}")
        names = [part.name for part in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"part names must be unique, got {names}")
        if [part.role for part in self.parts].count(TRAINER) != 1:
            raise ValueError("a launch has exactly one trainer part")

    @property
    def servers(self) -> list[Part]:
        return [part for part in self.parts if part.role == SERVER]

    @property
    def trainer(self) -> Part:
        return next(part for part in self.parts if part.role == TRAINER)

    def bundles(self) -> list[dict[str, float]]:
        """One Ray bundle per part, in the order of `parts` (a part's bundle index)."""
        return [bundle(part) for part in self.parts]


def bundle(part: Part) -> dict[str, float]:
    """The resources one part reserves: its GPUs and CPUs (a bundle may not be empty)."""
    resources: dict[str, float] = {}
    if part.gpus:
        resources["GPU"] = float(part.gpus)
    if part.cpus:
        resources["CPU"] = float(part.cpus)
    if not resources:
        raise ValueError(f"{part.name}: a part needs at least one GPU or some CPU (a Ray bundle may not be empty)")
    return resources


def plan_parts(
    *, servers: int, trainer_gpus: int, cpu_only: bool, cpus: float, server_command: Sequence[str],
    retriever_command: Sequence[str] | None, server_env: dict[str, str] | None = None,
) -> tuple[Part, ...]:
    """`servers` vLLM servers of 1 GPU each, the trainer on `trainer_gpus` GPUs, and the
    retrieval server (when `retriever_command` is given) on CPUs only. With `cpu_only` no part
    asks for a GPU: `trainer_gpus` is then the trainer's rank count, and every bundle holds
    `cpus` CPUs, which must be more than 0."""
    if servers < 1:
        raise ValueError(f"a fleet needs at least one server, got {servers}")
    if trainer_gpus < 1:
        raise ValueError(f"the trainer needs at least one GPU (or, on CPUs, one rank), got {trainer_gpus}")
    if cpus < 0 or (cpu_only and cpus <= 0):
        raise ValueError(f"CPUs per part must be {'more than 0 on CPUs only' if cpu_only else 'at least 0'}, got {cpus}")
    gpu = 0 if cpu_only else 1
    parts = [Part(f"server-{i}", SERVER, gpu, cpus, tuple(server_command), "/health", dict(server_env or {}))
             for i in range(servers)]
    if retriever_command is not None:
        parts.append(Part("retriever", RETRIEVER, 0, cpus or 1.0, tuple(retriever_command), "/health"))
    if cpu_only:  # one bundle on one node for every rank (torchrun --standalone)
        parts.append(Part("trainer", TRAINER, 0, cpus * trainer_gpus))
    else:
        parts.append(Part("trainer", TRAINER, trainer_gpus, cpus))
    return tuple(parts)
