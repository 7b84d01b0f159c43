"""Multi-turn rollouts on a fleet: each episode advancing on its own against every turn waiting
for its slowest episode.

Servers: two local HTTP servers that answer as a search agent would
(`tests/paced_server.py`: another search while searches are left, with the chance
`SEARCH_SHARE`, else an answer; all drawn from the request's seed) and take as long as a
reply's length would on a real server: one reply in four is long (`LONG_S`), the rest short
(`SHORT_S`), drawn from the seed too. The `fleet` engine routes over both; the search env
(HotpotQA) steps against the real local retrieval server. `EPISODES` episodes of up to
`MAX_SEARCHES` + 1 turns.

Each round runs the same batch with the same seed per turn (`RolloutConfig(per_episode=False)`)
and per episode (the default on a `RequestEngine`), alternating; both must give the same
trajectories (checked). The fixture times a round (both sides); `extra_info` holds both
median wall times and `ratio` = per-episode / per-turn. With a turn's time set by its slowest
reply, per turn costs about the sum over turns of the longest reply, per episode about the
longest episode's own sum: the gap is the idle time of the fast episodes.

Run: ``.venv/bin/python -m pytest benchmarks/test_rollout_overlap.py --benchmark-only -q -s``
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agents.engine import SamplingParams
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from benchmarks.workers.runtime import scale
from envs import registry
from envs.retrieval.local import ensure_local_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' server double
from paced_server import PacedServer  # noqa: E402

pytestmark = pytest.mark.slow

MODEL = "tiny-random"
EPISODES = scale(32, 8)
ROUNDS = scale(3, 1)
MAX_SEARCHES = 3
SEARCH_SHARE = 0.75
SHORT_S, LONG_S = 0.03, 0.5


def reply_latency(text: str, turn: int, seed: int) -> float:
    return LONG_S if random.Random(seed * 31 + 7).random() < 0.25 else SHORT_S


def test_per_episode_against_per_turn(benchmark: Any, machine_load: None) -> None:
    from agents.engines.fleet import FleetEngine
    from agents.models import load_tokenizer

    tokenizer = load_tokenizer(MODEL)
    retriever_url = ensure_local_server()
    servers = [PacedServer(tokenizer, reply_latency, max_searches=MAX_SEARCHES, search_share=SEARCH_SHARE) for _ in range(2)]
    engine = FleetEngine(MODEL, base_urls=[s.url for s in servers], tokenizer=tokenizer, per_server_concurrency=EPISODES)
    factory = lambda: registry.make("hotpotqa", split="test", retriever_url=retriever_url)  # noqa: E731
    tasks = list(factory().tasks[:EPISODES])
    episodes = [Episode(task, None, "p0", 0) for task in tasks]
    sampling = SamplingParams(temperature=1.0, max_tokens=48)
    drivers = {mode: RolloutDriver(engine, factory, RolloutConfig(sampling=sampling, per_episode=mode == "per_episode"))
               for mode in ("per_turn", "per_episode")}
    times: dict[str, list[float]] = {"per_turn": [], "per_episode": []}
    turns: list[int] = []

    def run(mode: str, seed: int) -> list[dict[str, Any]]:
        started = time.perf_counter()
        trajectories = drivers[mode].run(episodes, seed=seed)
        times[mode].append(time.perf_counter() - started)
        assert all(t.error is None for t in trajectories)
        turns.extend(len(t.turns) for t in trajectories)
        return [{k: v for k, v in t.to_record().items() if k != "timings"} for t in trajectories]

    run("per_episode", 10_000)  # warm-up: tokenizer, connections, retrieval
    seeds = iter(range(ROUNDS))

    def once() -> None:
        seed = next(seeds)
        reference = run("per_turn", seed)
        assert run("per_episode", seed) == reference, "both schedules sample the same trajectories"

    benchmark.pedantic(once, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    per_turn, per_episode = statistics.median(times["per_turn"]), statistics.median(times["per_episode"][1:])
    figures = {"per_turn_s": round(per_turn, 3), "per_episode_s": round(per_episode, 3),
               "ratio": round(per_episode / per_turn, 3), "episodes": EPISODES,
               "mean_turns": round(sum(turns) / len(turns), 2), "short_s": SHORT_S, "long_s": LONG_S}
    benchmark.extra_info.update(figures)
    print(f"\nrollout overlap: {figures}")
    engine.close()
    for server in servers:
        server.stop()
