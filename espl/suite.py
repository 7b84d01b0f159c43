"""Comparison suites: which (env, method, seed) runs a leaderboard is made of.

A suite is a TOML file (see `espl/suites/`) naming the envs, methods and seeds, a preset
and overrides shared by every run, so that all rows spend the same budget:

    name = "math-cpu"
    preset = "default"
    envs = ["gsm8k"]
    methods = ["base", "rl", "evolution", "reflect", "espl"]
    seeds = [0, 1, 2]
    [overrides]
    "policy.model" = "smollm2-135m"
    iterations = 4

Every run has a fixed directory `<root>/<suite>/<env>--<method>--seed<k>`, so planning is a
look at the disk: a run is finished when its `summary.json` exists and its `config.json` is the
config the suite asks for now; partial when it has a checkpoint to resume from; stale when the
suite changed since it ran.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from espl.files.atomic import readable_directory
from espl.config import ConfigError, RunConfig, load_config
from espl.run.addresses import ADDRESS_KEYS
from espl.run.run_dir import CHECKPOINT, CONFIG, LOOP_STATE, SUMMARY

DEFAULT_ROOT = Path("runs") / "suites"
SUITE_DIR = Path(__file__).resolve().parent / "suites"
SUITE_KEYS = {"name", "description", "preset", "envs", "methods", "seeds", "overrides"}
SET_BY_SUITE = {"env.name", "method", "seed"}


class SuiteError(ValueError):
    """A suite file that cannot be run as written."""


class RunStatus(enum.Enum):
    FINISHED = "finished"
    PARTIAL = "partial"
    """Has a checkpoint: running it resumes after the last completed iteration."""
    MISSING = "missing"
    STALE = "stale"
    """Ran with a different config than the suite asks for now."""


@dataclass(frozen=True)
class Suite:
    name: str
    preset: str
    envs: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: Mapping[str, Any]
    """Nested config values shared by every run."""
    description: str = ""
    source: Path | None = None


@dataclass(frozen=True)
class RunSpec:
    env: str
    method: str
    seed: int
    run_dir: Path
    config: RunConfig

    @property
    def label(self) -> str:
        return self.run_dir.name

    def expected_config(self) -> dict[str, Any]:
        """The config as `config.json` stores it (JSON round trip: tuples become lists)."""
        return json.loads(json.dumps(self.config.to_dict(), default=str))


@dataclass(frozen=True)
class PlannedRun:
    spec: RunSpec
    status: RunStatus


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a suite in `espl/suites/`."""
    path = Path(name_or_path)
    if path.exists():
        return path
    builtin = SUITE_DIR / f"{path.stem}.toml"
    if not path.suffix and builtin.exists():
        return builtin
    known = ", ".join(sorted(p.stem for p in SUITE_DIR.glob("*.toml")))
    raise SuiteError(f"no suite file {str(name_or_path)!r}; built-in suites: {known or 'none'}")


def load_suite(path: str | Path) -> Suite:
    path = resolve_suite_path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise SuiteError(f"{path}: not valid TOML: {error}") from error
    try:
        return parse_suite(data, source=path)
    except SuiteError as error:
        raise SuiteError(f"{path}: {error}") from None


def parse_suite(data: Mapping[str, Any], source: Path | None = None) -> Suite:
    """Check a suite's names and types; every run's config is built once to catch bad keys."""
    unknown = set(data) - SUITE_KEYS
    if unknown:
        raise SuiteError(f"unknown suite key(s) {sorted(unknown)}; a suite accepts {sorted(SUITE_KEYS)}")
    name = data.get("name") or (source.stem if source else "")
    if not isinstance(name, str) or not name or "/" in name:
        raise SuiteError(f"suite name must be a non-empty string without '/', got {name!r}")
    envs = _string_list(data, "envs")
    methods = _string_list(data, "methods")
    seeds = data.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise SuiteError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    _check_unique("seeds", seeds)
    _check_methods(methods)
    _check_envs(envs)
    overrides = _nested_overrides(data.get("overrides", {}))
    suite = Suite(
        name=name, preset=str(data.get("preset", "default")), envs=tuple(envs), methods=tuple(methods),
        seeds=tuple(seeds), overrides=overrides, description=str(data.get("description", "")), source=source,
    )
    try:
        for env in envs:
            for method in methods:
                run_config(suite, env, method, seeds[0])
    except (ConfigError, FileNotFoundError) as error:
        raise SuiteError(f"bad preset or override: {error}") from None
    return suite


def run_config(suite: Suite, env: str, method: str, seed: int) -> RunConfig:
    base = _merge(dict(suite.overrides), {"env": {"name": env}, "method": method, "seed": seed})
    return load_config(suite.preset, (), base)


def expand(suite: Suite, root: str | Path = DEFAULT_ROOT) -> list[RunSpec]:
    """Every run of the suite, env-major then method then seed (a stable order)."""
    base = Path(root) / suite.name
    return [
        RunSpec(env, method, seed, base / f"{_slug(env)}--{method}--seed{seed}", run_config(suite, env, method, seed))
        for env in suite.envs
        for method in suite.methods
        for seed in suite.seeds
    ]


@functools.cache
def _default_settings() -> dict[str, Any]:
    """`RunConfig()` as `config.json` stores it (read-only; computed once)."""
    return json.loads(json.dumps(RunConfig().to_dict(), default=str))


BEHAVIOUR_BEFORE: dict[str, Any] = {"evolution": {"verbatim_words": 0}}
"""Settings added with a default that changed what runs do, and the value that matches how
runs made before them behaved (mutation used to summarise every rollout)."""


def with_new_defaults(
    stored: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, before: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A stored config plus every setting added to `RunConfig` since, at its default value.

    A run made before a setting existed behaved as that setting's default does, so it is not
    stale merely for being older; it is stale if the suite asks for another value. A setting
    whose default changed the behaviour is filled from `before` (`BEHAVIOUR_BEFORE`) instead.
    """
    before = BEHAVIOUR_BEFORE if before is None else before
    return _fill_missing(_fill_missing(stored, before), _default_settings() if defaults is None else defaults)


def _fill_missing(stored: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """`stored` with each key of `values` it lacks, section by section."""
    merged = dict(stored)
    for key, value in values.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _fill_missing(merged[key], value)
    return merged


REPORTING_ONLY = ("report_to", *ADDRESS_KEYS)
"""Settings that say where a run is reported, or where the servers it uses listen, not what it
does: a change to them leaves a run finished (not stale), and a partial run takes the new value
when it resumes (a fleet started again has new addresses; it serves the same `policy.model`,
which does count). The same keys `run --resume` accepts (`espl.run.addresses`)."""


def _results_config(config: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for dotted in REPORTING_ONLY:
        *sections, key = dotted.split(".")
        node = out
        for section in sections:
            if not isinstance(node.get(section), Mapping):
                break
            node[section] = node = dict(node[section])
        else:
            node.pop(key, None)
    return out


def on_fleet(suite: Suite, base_urls: Sequence[str]) -> Suite:
    """The suite with every run sampling on these servers (`policy.base_urls`): runs that
    share one fleet, each loading its adapters under its own names (`adapter_prefix`)."""
    return dataclasses.replace(suite, overrides=_merge(dict(suite.overrides), {"policy": {"base_urls": list(base_urls)}}))


def run_status(spec: RunSpec) -> RunStatus:
    config_file = spec.run_dir / CONFIG
    if not config_file.exists():
        return RunStatus.MISSING
    try:
        stored = json.loads(config_file.read_text())
    except json.JSONDecodeError:
        return RunStatus.STALE
    if _results_config(with_new_defaults(stored)) != _results_config(spec.expected_config()):
        return RunStatus.STALE
    if (spec.run_dir / SUMMARY).exists():
        return RunStatus.FINISHED
    if (readable_directory(spec.run_dir / CHECKPOINT) / LOOP_STATE).exists():
        return RunStatus.PARTIAL
    return RunStatus.MISSING


def plan(suite: Suite, root: str | Path = DEFAULT_ROOT) -> list[PlannedRun]:
    return [PlannedRun(spec, run_status(spec)) for spec in expand(suite, root)]


def config_diff(expected: Mapping[str, Any], stored: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ (why a run is stale)."""
    out: list[str] = []
    for key in sorted(set(expected) | set(stored)):
        a, b = expected.get(key), stored.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {b!r} -> {a!r}")
    return out


# -- validation helpers ----------------------------------------------------------------------


def _string_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(f"{key} must be a non-empty list of names, got {value!r}")
    _check_unique(key, value)
    return value


def _check_unique(key: str, values: Sequence[Any]) -> None:
    repeated = sorted({str(v) for v in values if values.count(v) > 1})
    if repeated:
        raise SuiteError(f"{key} lists {', '.join(repeated)} more than once")


def _check_methods(methods: Sequence[str]) -> None:
    from espl.methods import method_names

    unknown = [m for m in methods if m not in method_names()]
    if unknown:
        raise SuiteError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(method_names())}")


def _check_envs(envs: Sequence[str]) -> None:
    from envs.registry import resolve

    unknown = []
    for env in envs:
        try:
            resolve(env)
        except KeyError:
            unknown.append(env)
    if unknown:
        from envs.registry import list_envs

        known = ", ".join(sorted(e.alias for e in list_envs()))
        raise SuiteError(f"unknown env(s) {', '.join(unknown)}; known: {known}")


def _nested_overrides(raw: Any) -> dict[str, Any]:
    """Dotted keys (`"policy.model" = ...`) and TOML tables (`[overrides.policy]`) alike."""
    if not isinstance(raw, Mapping):
        raise SuiteError(f"overrides must be a table, got {raw!r}")
    out: dict[str, Any] = {}
    for dotted, value in _flatten(raw):
        if dotted in SET_BY_SUITE:
            raise SuiteError(f"override {dotted!r} is set per run by the suite's envs/methods/seeds lists")
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise SuiteError(f"override {dotted!r} conflicts with a value set for {part!r}")
        node[parts[-1]] = value
    return out


def _flatten(raw: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    for key, value in raw.items():
        if isinstance(value, Mapping):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((prefix + key, value))
    return items


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        out[key] = _merge(dict(out[key]), value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def _slug(name: str) -> str:
    return name.replace("/", "_")
