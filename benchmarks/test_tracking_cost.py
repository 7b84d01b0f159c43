"""What experiment tracking adds to an iteration's records, per backend.

The run writes each iteration's records anyway (`RunRecords.record_iteration`: the metrics
line and the prompt log's step, both fsynced). With `report_to` the same records also go to
the trackers (`TrackerFeed.record`: the scalars, the population table, the evaluated prompt).
Both are timed here on one record of the golden coin scenario (an E-SPL iteration with an RL
step, a match and an evaluation) and a population of `PROMPTS` rated prompts of four
principles each, and the trackers' cost is reported as a ratio to the records' own. Opening
each backend (once per run) is reported too.

    .venv/bin/python -m pytest benchmarks/test_tracking_cost.py --benchmark-only -q -s
"""

from __future__ import annotations

import gzip
import json
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import pytest

from benchmarks.workers.runtime import scale

pytestmark = pytest.mark.slow

PROMPTS = scale(200, 50)
"""The default preset's population capacity."""
ROUNDS = scale(20, 5)
GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden" / "coin--espl.json.gz"


def _record() -> dict[str, Any]:
    metrics = json.loads(gzip.open(GOLDEN).read())["metrics"]
    return next(r for r in metrics if "train" in r and "eval" in r)


def _population(size: int):
    from espl.evolution.population import Population
    from espl.evolution.rating import RatingSystem

    ratings = RatingSystem()
    population = Population(capacity=size, window_size=10)
    parent = None
    for index in range(size):
        principles = [f"Principle {k} of prompt {index}: read the question and answer in the format asked." for k in range(4)]
        prompt = population.create(principles, step=index, parents=(parent,) if parent else (),
                                   operator="mutation" if parent else "seed", rating=ratings.fresh())
        parent = prompt.id
    return population


def _time(call, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return median(times)


@pytest.mark.parametrize("backend", ["tensorboard", "wandb", "mlflow"])
def test_tracking_cost_per_iteration(backend: str, benchmark, machine_load) -> None:
    from espl.run.context import LoopState, RunRecords
    from espl.run.run_dir import RunDir
    from espl.tracking import TrackerContext, open_trackers

    record, population = _record(), _population(PROMPTS)
    record["eval"]["prompt_id"] = population.member_ids[-1]
    with tempfile.TemporaryDirectory(prefix=f"bench-tracking-{backend}-") as path:
        run_dir = RunDir(Path(path) / "run").create()
        records = RunRecords(run_dir, LoopState())
        step = iter(range(1, 10_000))
        own = _time(lambda: records.record_iteration({**record, "iteration": next(step)}, population), ROUNDS)

        started = time.perf_counter()
        feed = open_trackers([backend], TrackerContext(run_dir.path, "bench", {"method": "espl"}))
        open_s = time.perf_counter() - started
        assert feed is not None
        benchmark.pedantic(lambda: feed.record({**record, "iteration": next(step)}, population), rounds=ROUNDS, iterations=1)
        started = time.perf_counter()
        feed.finish()
        finish_s = time.perf_counter() - started
    tracked = benchmark.stats.stats.median
    benchmark.extra_info.update({"records_s": own, "tracker_s": tracked, "ratio": tracked / own, "open_s": open_s,
                                 "finish_s": finish_s, "prompts": PROMPTS})
    print(f"\n{backend}: records {own * 1e3:.1f} ms, tracker +{tracked * 1e3:.1f} ms ({tracked / own:.2f}x), "
          f"open {open_s:.1f} s, finish {finish_s:.1f} s, {PROMPTS} prompts")
