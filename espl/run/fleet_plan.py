"""The fleet engine's arguments, resolved from `policy` and `rl.keep_adapters`.

The fleet samples on remote vLLM servers that take each published adapter, so, unlike the
openai engine, it trains: `policy.device` and `policy.dtype` then place the trainer's model
here. The servers keep loaded as many adapter versions as the trainer keeps folders
(`rl.keep_adapters`; 0 keeps all): a server that evicts a version from its cache reloads it
from its folder.
"""

from __future__ import annotations

from typing import Any

from espl.config import ConfigError, RunConfig
from espl.run.vllm_plan import refuse_vllm_settings


def fleet_engine_kwargs(config: RunConfig, *, trains: bool) -> dict[str, Any]:
    """`FleetEngine` keyword arguments; settings it would ignore are refused."""
    policy = config.policy
    refuse_vllm_settings(config)
    if not trains:
        for key in ("dtype", "device"):
            if getattr(policy, key) != "auto":
                raise ConfigError(f"policy.{key}: the fleet's servers choose their own {key}, and method "
                                  f"{config.method!r} trains no model here")
    if not policy.base_urls:
        raise ConfigError("policy.base_urls: the fleet engine needs at least one vLLM server URL")
    if policy.per_server_concurrency < 1:
        raise ConfigError(f"policy.per_server_concurrency must be at least 1, got {policy.per_server_concurrency}")
    return {"base_urls": list(policy.base_urls), "per_server_concurrency": policy.per_server_concurrency,
            "keep_versions": config.rl.keep_adapters}
