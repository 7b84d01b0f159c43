"""The command lines a launch's parts run: the project's own commands, as a user would type them.

``{python}`` is the Python of the node a part lands on, ``{host}`` / ``{port}`` its address
(filled by `espl.launch.host`). Servers and the run read the same `--preset` and `--set`, so
they agree on the model, the context and the LoRA rank; the run gets the servers' addresses
as `policy.base_urls` (and the retrieval server's as `env.retriever_url`) and the fleet engine.
A resumed run (`run --resume DIR`) keeps its recorded config: the servers are given its
served settings, and the run only the new addresses.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from espl.config import ConfigError, RunConfig

CLI = ("{python}", "-m", "espl.cli")

SERVED_KEYS = ("policy.model", "policy.max_total_tokens", "policy.vllm.max_model_len", "rl.lora.rank", "rl.keep_adapters")
"""What `serve-vllm` reads from a run config: servers shared by a suite's runs must agree on them."""


def config_flags(preset: str, overrides: Sequence[str]) -> list[str]:
    return ["--preset", preset, *(flag for override in overrides for flag in ("--set", override))]


def server_command(preset: str, overrides: Sequence[str]) -> list[str]:
    """`espl-bench serve-vllm` with the run's settings, on the part's address."""
    return [*CLI, "serve-vllm", *config_flags(preset, overrides), "--host", "{host}", "--port", "{port}"]


def retriever_command(index: str | None) -> list[str]:
    """`espl-bench retriever serve` (the built-in corpus's index unless `index` is given)."""
    return [*CLI, "retriever", "serve", *(["--index", index] if index else []), "--host", "{host}", "--port", "{port}"]


def fleet_flags(urls: Sequence[str], retriever_url: str | None) -> list[str]:
    """The run's overrides that point it at the launched parts."""
    flags = ["--set", "policy.engine=fleet", "--set", f"policy.base_urls={json.dumps(list(urls))}"]
    if retriever_url is not None:
        flags += ["--set", f"env.retriever_url={json.dumps(retriever_url)}"]
    return flags


def run_command(ranks: int, preset: str, overrides: Sequence[str], run_args: Sequence[str],
                urls: Sequence[str], retriever_url: str | None) -> list[str]:
    """`espl-bench run` on the fleet, under `torchrun` over `ranks` processes when more than one."""
    return [*_run_cli(ranks), "run", *config_flags(preset, overrides), *fleet_flags(urls, retriever_url), *run_args]


def resume_command(ranks: int, run_args: Sequence[str], urls: Sequence[str], retriever_url: str | None) -> list[str]:
    """`espl-bench run --resume DIR` (in `run_args`) on the new fleet: the run's recorded config
    with the new addresses, the only `--set` keys a resumed run takes."""
    return [*_run_cli(ranks), "run", *fleet_flags(urls, retriever_url), *run_args]


def _run_cli(ranks: int) -> tuple[str, ...]:
    return CLI if ranks == 1 else ("{python}", "-m", "torch.distributed.run", "--standalone",
                                   "--nproc-per-node", str(ranks), "-m", "espl.cli")


def compare_command(suite: str, compare_args: Sequence[str], urls: Sequence[str]) -> list[str]:
    """`espl-bench compare` with every run of the suite on the one fleet."""
    return [*CLI, "compare", "--suite", suite, "--base-urls", ",".join(urls), *compare_args]


def served_settings(config: RunConfig) -> dict[str, Any]:
    """The values of `SERVED_KEYS` in a config."""
    values = {}
    for dotted in SERVED_KEYS:
        node: Any = config
        for part in dotted.split("."):
            node = getattr(node, part)
        values[dotted] = node
    return values


def served_overrides(config: RunConfig) -> list[str]:
    """`--set` values that make `serve-vllm` serve what `config` needs (a resumed run's)."""
    return [f"{key}={json.dumps(value)}" for key, value in served_settings(config).items() if value is not None]


def suite_server_overrides(configs: Sequence[RunConfig]) -> list[str]:
    """`--set` values that make `serve-vllm` serve what every run of a suite needs; runs that
    need different servers (another model, context or LoRA rank) cannot share one fleet."""
    settings = [served_settings(config) for config in configs]
    for key in SERVED_KEYS:
        values = {json.dumps(s[key]) for s in settings}
        if len(values) > 1:
            raise ConfigError(f"{key}: the suite's runs differ ({', '.join(sorted(values))}), so they cannot share "
                              "one fleet of servers; set it once in the suite's overrides")
    return served_overrides(configs[0])
