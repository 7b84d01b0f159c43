"""Which settings differ between runs that a leaderboard sets side by side.

A reader compares the rows of one env as if only the method changed (and the seed, which the
mean ± s.e. over seeds absorbs). When anything else in the runs' `config.json` differs (a
learning rate, the evaluation's size, the model, a setting added since some runs were made)
that reading is wrong, so the leaderboard names the differing keys instead of merging quietly.
Runs of different envs are not compared: their rows are not read against each other, and an
env's own settings (its name, its options) differ by design.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from espl.leaderboard.collect import RunRecord

IGNORED = ("method", "seed")
"""Top-level keys that may differ between merged runs: they are what a leaderboard compares."""
ABSENT = "(absent)"
MAX_VALUE_CHARS = 60


@dataclass(frozen=True)
class KeyValues:
    """One differing key: each value it takes, with the methods and number of runs that have it."""

    key: str
    values: tuple[tuple[str, tuple[str, ...], int], ...]
    """(value as JSON or `(absent)`, methods, runs), sorted by value."""

    def describe(self, code: bool = False) -> str:
        quote = (lambda text: f"`{text}`") if code else (lambda text: text)
        parts = [
            f"{quote(value)} in {runs} run{'s' if runs != 1 else ''} ({', '.join(methods)})"
            for value, methods, runs in self.values
        ]
        return f"{quote(self.key)}: " + "; ".join(parts)


@dataclass(frozen=True)
class ConfigWarning:
    """The runs of `env` do not share one config apart from method and seed."""

    env: str
    differences: tuple[KeyValues, ...]
    without_config: tuple[str, ...] = ()
    """Runs with no config.json (`method seed N`): what they ran with cannot be checked."""

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.differences)

    def message(self, code: bool = False) -> str:
        """One paragraph; `code` quotes keys and values as markdown code spans."""
        parts = []
        if self.differences:
            parts.append(
                f"{self.env}: the runs' configs differ outside method and seed, so its rows may not be "
                "comparable. " + ". ".join(d.describe(code) for d in self.differences) + "."
            )
        if self.without_config:
            parts.append(
                f"{self.env}: {len(self.without_config)} run(s) have no config.json, so their settings "
                f"could not be compared: {', '.join(self.without_config)}."
            )
        return " ".join(parts)


def config_warnings(runs: Sequence[RunRecord]) -> tuple[ConfigWarning, ...]:
    """Per env (sorted), the keys on which its runs' configs differ; envs that agree give nothing."""
    by_env: dict[str, list[RunRecord]] = defaultdict(list)
    for run in runs:
        by_env[run.env].append(run)
    warnings = []
    for env in sorted(by_env):
        group = sorted(by_env[env], key=lambda r: (r.method, r.seed, str(r.path)))
        with_config = [r for r in group if r.config]
        missing = tuple(f"{r.method} seed {r.seed}" for r in group if not r.config)
        differences = differing_keys(with_config)
        if differences or missing:
            warnings.append(ConfigWarning(env, differences, missing))
    return tuple(warnings)


def differing_keys(runs: Sequence[RunRecord]) -> tuple[KeyValues, ...]:
    """Every dotted key whose value is not the same in all `runs` (a missing key counts as a value)."""
    flat = [_comparable(run.config) for run in runs]
    keys = sorted({key for config in flat for key in config})
    differences = []
    for key in keys:
        holders: dict[str, list[RunRecord]] = defaultdict(list)
        for run, config in zip(runs, flat):
            holders[json.dumps(config[key], sort_keys=True, ensure_ascii=False) if key in config else ABSENT].append(run)
        if len(holders) > 1:  # told apart in full, shown shortened
            values = tuple(
                (_short(value), tuple(sorted({r.method for r in holders[value]})), len(holders[value]))
                for value in sorted(holders)
            )
            differences.append(KeyValues(key, values))
    return tuple(differences)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys (`rl.lora.rank`); an empty table adds no key, as an absent one."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    return flatten({k: v for k, v in config.items() if k not in IGNORED})


def _short(text: str) -> str:
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 1] + "…"
