"""Where a run's servers listen, as opposed to what the run does.

A run on servers (a fleet, a retrieval server, a reflector's endpoints) is resumed on servers
started again, which have new addresses. Those keys, and only those, may change when a run
resumes (`espl-bench run --resume DIR --set policy.base_urls=[...]`, what `espl-bench launch
-- --resume DIR` runs): the run continues exactly as it would have on the old servers, since
the servers serve what the recorded config says (model, context, LoRA rank). For the same
reason a new address never makes a suite's run stale (`espl.suite.REPORTING_ONLY`).
"""

from __future__ import annotations

from collections.abc import Sequence

from espl.config import ConfigError, RunConfig, load_config

ADDRESS_KEYS = ("policy.base_urls", "env.retriever_url", "evolution.reflector.base_urls")
KEPT_KEYS = ("policy.engine",)
"""Accepted on resume only with the value the run recorded (a launch names the fleet engine in
every run command it builds, a fresh run's and a resumed one's alike)."""


def override_key(item: str) -> str:
    return item.partition("=")[0].strip()


def with_new_addresses(config: RunConfig, overrides: Sequence[str]) -> RunConfig:
    """The resumed run's `config` with the server addresses in `overrides` (dotted `KEY=VALUE`);
    any other key is refused by name, in one line."""
    others = [key for key in map(override_key, overrides) if key not in ADDRESS_KEYS + KEPT_KEYS]
    if others:
        raise ConfigError(f"--resume continues a run with its own config.json; --set {', '.join(others)} would be "
                          f"ignored (with --resume, --set takes only where the servers are: {', '.join(ADDRESS_KEYS)})")
    moved = load_config(None, overrides, config.to_dict())
    for key in KEPT_KEYS:
        section, name = key.split(".")
        recorded, given = getattr(getattr(config, section), name), getattr(getattr(moved, section), name)
        if given != recorded:
            raise ConfigError(f"--set {key}={given}: the run recorded {recorded!r}, and a resumed run keeps it")
    return moved
