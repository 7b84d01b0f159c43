"""Every method on three envs, fixed seed, against the records in `tests/data/golden/`.

The records were taken before the architecture of methods, operators and the run builder was
reshaped; this test holds the new code to them (see `golden_runs` for what is compared and how
to re-record). The two training scenarios (`coin--espl`, `coin--rl`) were recorded with the
LoRA factors drawn from the run's seed: before that fix their gradients differed from run to
run, so there was nothing stable to record. A later fix that changes a record on purpose is
named in `golden_runs.FIXES` and its scenarios re-recorded (each record lists the same fixes).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_runs import ENVS, FIXES, METHODS, differences, load_record, run_scenario, stable


def _tier(env: str, method: str) -> object:
    """Every method on `arithmetic` in `make test`. On `coin` all but `evolution` (the
    evolution parts of `espl` without its trainer) and `gepa` (GEPA runs end to end in
    test_gepa_e2e and on `arithmetic`, and adopts a proposed prompt in test_gepa_scripted). On
    `hotpotqa` (a real local retrieval server, multi-turn episodes) only `espl`, whose run
    exercises the policy, trainer and evolution parts the other methods reuse. The records left
    out here are replayed in the extended tier."""
    if env == "hotpotqa":
        return pytest.mark.slow if method == "espl" else pytest.mark.extended
    if env == "coin" and method != "base":  # the training scenarios: the slow tier
        return pytest.mark.extended if method in ("evolution", "gepa") else pytest.mark.slow
    return ()


SCENARIOS = [pytest.param(env, method, marks=_tier(env, method)) for env in ENVS for method in METHODS]


FRESH: dict[str, dict] = {}
"""Records made by this session's runs (the determinism test reuses one instead of running twice)."""


@pytest.mark.parametrize(("env", "method"), SCENARIOS)
def test_a_fixed_seed_run_matches_its_record(env: str, method: str, tmp_path: Path) -> None:
    actual = run_scenario(env, method, tmp_path / "run")
    FRESH[f"{env}--{method}"] = actual
    expected = load_record(env, method)
    assert expected.pop("recorded_after", []) == list(FIXES.get(f"{env}--{method}", ())), "re-record and name the fix"
    found = differences(expected, actual)
    assert not found, f"{len(found)} difference(s) from the record:\n" + "\n".join(found[:20])


@pytest.mark.slow  # beside the coin records it reuses
def test_two_runs_with_one_seed_write_identical_metrics(tmp_path: Path) -> None:
    """Same seed, same machine: bit-identical records, training steps included (the LoRA A
    factors are drawn from the run's seed, not from whatever torch's global RNG holds)."""
    first = FRESH.get("coin--rl") or run_scenario("coin", "rl", tmp_path / "first")
    second = run_scenario("coin", "rl", tmp_path / "second")
    assert any(m.get("train", {}).get("grad_norm") for m in first["metrics"]), "the scenario must train"
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    lines = [stable(json.loads(line)) for line in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()]
    assert lines == first["metrics"], "metrics.jsonl without timings, line for line"
