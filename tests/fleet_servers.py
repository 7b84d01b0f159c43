"""Two real `espl-bench serve-vllm` servers for the fleet's tests and benchmark, and a source
of real adapter versions.

Each server runs SmolLM2-135M in float32 on one core of its own, with a small
context and KV cache, started through `serve-vllm` from a run config (so adapters can be
loaded at run time, as a fleet member's must). At most two run at once: a cold server for a
comparison takes the place of one fleet member, which is started again after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from vllm_servers import free_port, launch, stop, wait_until_healthy

from agents.engine import Adapter
from agents.engines import vllm_env

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2-135m"
"""The tiny random model's head size (16) has no vLLM CPU attention kernel; this one's (64) has."""
LORA_RANK = 8
SERVER_OPTIONS = ("--dtype", "float32", "--max-model-len", "1024", "--enforce-eager", "--seed", "0")


def serve_command(port: int, *vllm_options: str) -> list[str]:
    return [sys.executable, "-m", "espl.cli", "serve-vllm", "--set", f"policy.model={MODEL}",
            "--set", f"rl.lora.rank={LORA_RANK}", "--port", str(port), "--", *SERVER_OPTIONS, *vllm_options]


class TwoServers:
    """Servers 0 and 1, each bound to its own core (the same one when only one is allowed)."""

    def __init__(self, directory: Path, count: int = 2) -> None:
        self.directory = directory
        cores = sorted(vllm_env.allowed_cores())
        self.cores = [cores[i % len(cores)] for i in range(count)]
        self.ports = [free_port() for _ in range(count)]
        self.processes: list[subprocess.Popen | None] = [None] * count
        self.starts = [0] * count

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(len(self.ports))]

    def api(self, i: int) -> str:
        return self.url(i) + "/v1"

    def env(self, i: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(VLLM_CPU_OMP_THREADS_BIND=str(self.cores[i]), VLLM_CPU_KVCACHE_SPACE="1")
        return env

    def log(self, i: int) -> Path:
        return self.directory / f"server{i}-{self.starts[i]}.log"

    def launch(self, i: int, *vllm_options: str, port: int | None = None) -> subprocess.Popen:
        """Start server `i` (on its port, or `port`) without waiting."""
        self.starts[i] += 1
        process = launch(serve_command(port or self.ports[i], *vllm_options), self.log(i), env=self.env(i), cwd=ROOT)
        if port is None:
            self.processes[i] = process
        return process

    def wait(self, i: int, process: subprocess.Popen | None = None, port: int | None = None) -> float:
        process = process or self.processes[i]
        assert process is not None
        return wait_until_healthy(process, f"http://127.0.0.1:{port or self.ports[i]}", self.log(i), timeout=900)

    def start_all(self) -> None:
        for i in range(len(self.ports)):
            self.launch(i)
        for i in range(len(self.ports)):
            self.wait(i)

    def stop(self, i: int) -> None:
        process = self.processes[i]
        if process is not None:
            stop(process)
            self.processes[i] = None

    def stop_all(self) -> None:
        for i in range(len(self.ports)):
            self.stop(i)


@contextmanager
def two_servers(directory: Path) -> Iterator[TwoServers]:
    """Both servers started, and stopped however the block ends. The model folder is built
    first, so that its conversion does not count against the servers' start-up wait."""
    from agents.models import resolve

    resolve(MODEL)
    fleet = TwoServers(directory)
    try:
        fleet.start_all()
        yield fleet
    finally:
        fleet.stop_all()


class AdapterVersions:
    """An `AdapterSource` of real peft adapters on the model: each `published_adapter` draws
    new LoRA factors (as an update changes them; large, so greedy ids change) and publishes them
    as the trainer does (`espl.rl.lora.publish_adapter`, a new folder per version)."""

    def __init__(self, directory: Path) -> None:
        from agents.models import load_model
        from espl.rl.lora import attach_lora
        from espl.rl.settings import LoraSettings

        self.directory = directory
        self.model = attach_lora(load_model(MODEL, dtype="float32"), LoraSettings(rank=LORA_RANK), seed=0)
        self.version = 0

    def adapter(self) -> Adapter:
        raise NotImplementedError("the fleet loads published folders")

    def published_adapter(self) -> Adapter:
        from espl.rl.lora import publish_adapter

        self.version += 1
        generator = torch.Generator().manual_seed(self.version)
        with torch.no_grad():
            for name, parameter in self.model.named_parameters():
                if "lora_" in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
        return publish_adapter(self.model, self.directory, self.version)


def token_prompts(tokenizer: Any, count: int, length: int = 24, seed: int = 0) -> list[list[int]]:
    """`count` distinct prompts of ordinary token ids."""
    generator = torch.Generator().manual_seed(seed)
    high = min(len(tokenizer), 20000)
    return [torch.randint(100, high, (length,), generator=generator).tolist() for _ in range(count)]


def ids(results: Sequence[Sequence[Any]]) -> list[list[int]]:
    return [completions[0].token_ids for completions in results]
