"""A resolved `RunConfig` written as a TOML preset that `--preset PATH.toml` reads back.

    espl-bench run --env gsm8k --method rl --preset smoke --set rl.lr=1e-5 --dry-run --write-config rl.toml
    espl-bench run --preset rl.toml            # the same config, every key spelled out

TOML has no null. A key whose value is None is left out when None is its default (reading
the file back gives None again); a None where the default is something else could not be
read back, so it is refused by name rather than written as a different config.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from espl.config import ConfigError, RunConfig
from espl.files.toml_writer import TomlWriteError, dumps

HEADER = "# A resolved espl-bench config: run it with `espl-bench run --preset {name}`.\n\n"


def config_toml(config: RunConfig) -> str:
    """The TOML text of `config` (see the module doc for None)."""
    try:
        return dumps(_preset_data(config, ""))
    except TomlWriteError as error:
        raise ConfigError(str(error)) from None


def write_config_toml(config: RunConfig, path: str | Path) -> Path:
    """Write `config` to a new file at `path`; an existing file is never replaced."""
    path = Path(path)
    text = HEADER.format(name=path.name) + config_toml(config)
    try:
        with path.open("x", encoding="utf-8") as handle:
            handle.write(text)
    except FileExistsError:
        raise ConfigError(f"{path} exists; choose another path for the config") from None
    return path


def _preset_data(instance: Any, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(instance):
        value = getattr(instance, field.name)
        if dataclasses.is_dataclass(value):
            out[field.name] = _preset_data(value, f"{prefix}{field.name}.")
        elif value is None:
            if _default(field) is not None:
                raise ConfigError(f"{prefix}{field.name} is None, which TOML cannot express, and its default is "
                                  f"{_default(field)!r}: a preset could not give it back")
        else:
            out[field.name] = _plain(value)
    return out


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    """Tuples as lists (TOML arrays), the rest as it is."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
