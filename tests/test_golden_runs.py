"""Every method on three envs, fixed seed, against the records in `tests/data/golden/`.

The records were taken before the architecture of methods, operators and the run builder was
reshaped; this test holds the new code to them (see `golden_runs` for what is compared and how
to re-record). The two training scenarios (`coin--espl`, `coin--rl`) were recorded with the
LoRA factors drawn from the run's seed: before that fix their gradients differed from run to
run, so there was nothing stable to record. A later fix that changes a record on purpose is
listed in `DELIBERATE_CHANGES` with the paths it is allowed to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden_runs import ENVS, METHODS, differences, load_record, read_record, run_scenario, stable

DELIBERATE_CHANGES: dict[str, tuple[str, ...]] = {}
"""scenario -> record paths a named fix changed on purpose (empty: behaviour is unchanged)."""

SCENARIOS = [
    pytest.param(env, method, marks=pytest.mark.slow if env == "hotpotqa" else ())
    for env in ENVS
    for method in METHODS
]


@pytest.mark.parametrize(("env", "method"), SCENARIOS)
def test_a_fixed_seed_run_matches_its_record(env: str, method: str, tmp_path: Path) -> None:
    actual = run_scenario(env, method, tmp_path / "run")
    expected = load_record(env, method)
    allowed = DELIBERATE_CHANGES.get(f"{env}--{method}", ())
    found = [d for d in differences(expected, actual) if not d.startswith(allowed)]
    assert not found, f"{len(found)} difference(s) from the record:\n" + "\n".join(found[:20])


def test_two_runs_with_one_seed_write_identical_metrics(tmp_path: Path) -> None:
    """Same seed, same machine: bit-identical records, training steps included (the LoRA A
    factors are drawn from the run's seed, not from whatever torch's global RNG holds)."""
    first = run_scenario("coin", "rl", tmp_path / "first")
    second = run_scenario("coin", "rl", tmp_path / "second")
    assert any(m.get("train", {}).get("grad_norm") for m in first["metrics"]), "the scenario must train"
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    lines = [stable(json.loads(line)) for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()]
    assert lines == read_record(tmp_path / "second")["metrics"]
