"""The rollout driver's per-episode schedule on engines that send each request on its own
(`openai`, `fleet`), against a real local HTTP server that answers as a search agent with the
latency each test sets (`paced_server.PacedServer`) and the real retrieval server behind the
search env: a fast episode runs on while a slow one generates, and both schedules give the
same trajectories for the same seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from paced_server import PacedServer

from agents.engine import SamplingParams
from agents.engines.fleet import FleetEngine
from agents.engines.openai import OpenAIEngine
from agents.models import load_tokenizer
from agents.rollout import Episode, RolloutConfig, RolloutDriver
from envs import registry
from envs.retrieval.local import ensure_local_server

MODEL = "tiny-random"
SLOW_FIRST_TURN_S = 1.0


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(MODEL)


@pytest.fixture(scope="module")
def retriever_url() -> str:
    return ensure_local_server()


def engine_for(kind: str, server: PacedServer, tokenizer: Any) -> Any:
    if kind == "fleet":
        return FleetEngine(MODEL, base_urls=[server.url], tokenizer=tokenizer, run_name="run", backoff=0.01)
    return OpenAIEngine(MODEL, base_urls=[server.url], tokenizer=tokenizer, backoff=0.01)


def rollout(engine: Any, retriever_url: str, episodes: list[Episode], *, per_episode: bool, seed: int) -> list[Any]:
    config = RolloutConfig(sampling=SamplingParams(temperature=1.0, max_tokens=48), per_episode=per_episode)
    factory = lambda: registry.make("hotpotqa", split="test", retriever_url=retriever_url)  # noqa: E731
    return RolloutDriver(engine, factory, config).run(episodes, seed=seed)


def episodes_of(tasks: list[Any], samples: int) -> list[Episode]:
    """Episode k runs under "Pace: fast k." (episode 0: "Pace: SLOW."), so the server's log tells them apart."""
    episodes = []
    for t, task in enumerate(tasks):
        for s in range(samples):
            k = t * samples + s
            episodes.append(Episode(task, "Pace: SLOW." if k == 0 else f"Pace: fast {k}.", "p0", s))
    return episodes


def without_timings(trajectories: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in t.to_record().items() if k != "timings"} for t in trajectories]


@pytest.fixture()
def slow_start(tokenizer: Any) -> Iterator[PacedServer]:
    """Episode 0's first reply takes a second; every other reply is immediate; every episode
    searches three times, then answers (four turns)."""
    latency = lambda text, turn, seed: SLOW_FIRST_TURN_S if "SLOW" in text and turn == 0 else 0.0  # noqa: E731
    server = PacedServer(tokenizer, latency, max_searches=3, search_share=1.0)
    yield server
    server.stop()


@pytest.mark.parametrize("per_episode", [True, False], ids=["per-episode", "per-turn"])
def test_a_fast_episode_runs_its_turns_while_a_slow_one_is_on_its_first(
    slow_start: PacedServer, tokenizer: Any, retriever_url: str, per_episode: bool
) -> None:
    engine = engine_for("openai", slow_start, tokenizer)
    tasks = list(registry.make("hotpotqa", split="test").tasks[:2])
    trajectories = rollout(engine, retriever_url, episodes_of(tasks, 1), per_episode=per_episode, seed=3)
    engine.close()
    assert [len(t.turns) for t in trajectories] == [4, 4] and all(t.error is None for t in trajectories)
    slow_first_answered = slow_start.requests_of("Pace: SLOW.")[0].answered
    fast = slow_start.requests_of("Pace: fast 1.")
    assert [r.turn for r in fast] == [0, 1, 2, 3]
    sent_meanwhile = sum(r.arrived < slow_first_answered for r in fast)
    if per_episode:
        assert sent_meanwhile == 4, "the fast episode sent all its turns while the slow one generated its first"
        assert trajectories[1].turns[-1].finish_reason == "stop"
    else:
        assert sent_meanwhile == 1, "per turn, the fast episode waits for the slow one at every turn"


@pytest.fixture()
def jittery(tokenizer: Any) -> Iterator[PacedServer]:
    """Replies take 0 to 60 ms by their seed, so they come back in another order than sent."""
    server = PacedServer(tokenizer, lambda text, turn, seed: (seed % 7) * 0.01, max_searches=3)
    yield server
    server.stop()


@pytest.mark.parametrize("kind", ["openai", "fleet"])
def test_both_schedules_give_the_same_trajectories_in_episode_order(
    jittery: PacedServer, tokenizer: Any, retriever_url: str, kind: str
) -> None:
    engine = engine_for(kind, jittery, tokenizer)
    tasks = list(registry.make("hotpotqa", split="test").tasks[:3])
    episodes = episodes_of(tasks, 2)
    per_episode = rollout(engine, retriever_url, episodes, per_episode=True, seed=11)
    per_turn = rollout(engine, retriever_url, episodes, per_episode=False, seed=11)
    other_seed = rollout(engine, retriever_url, episodes, per_episode=True, seed=12)
    engine.close()
    assert without_timings(per_episode) == without_timings(per_turn)
    assert [(t.task_id, t.sample_index, t.system_prompt) for t in per_episode] == [
        (e.task.id, e.sample_index, e.system_prompt) for e in episodes
    ]
    assert len({len(t.turns) for t in per_turn}) > 1, "episodes end at different turns, so turn batches shrink"
    assert all(t.error is None and t.done for t in per_episode)
    assert any(t.info.get("n_searches", 0) > 0 for t in per_episode), "the env stepped real searches"
    assert without_timings(other_seed) != without_timings(per_episode), "the seed reaches the server"
    if kind == "fleet":
        assert {turn.adapter for t in per_episode for turn in t.turns} == {MODEL}
