"""One search turn of 32 HotpotQA envs through the local retrieval server: batched vs one by one.

`SearchEnv.step_batch` sends the turn's 32 queries in one `POST /retrieve`; the peer is what a
plain Gymnasium loop does, `env.step` per env, i.e. 32 requests. Both use the same server
(bm25s over the built-in corpus), client, queries (each task's first gold supporting title)
and rendering, so the ratio is the saving from batching the retrieval calls.
"""

from __future__ import annotations

import gymnasium as gym
import pytest

import envs.search.register  # noqa: F401  (registers the espl/* search ids with Gymnasium)
from envs.search.env import SearchEnv

local = pytest.importorskip("envs.retrieval.local")

N_ENVS = 32


@pytest.fixture(scope="module")
def setup_envs():
    url = local.ensure_local_server()
    envs = [gym.make("espl/HotpotQA-v0", retriever_url=url).unwrapped for _ in range(N_ENVS)]
    actions: list[str] = []
    for i, env in enumerate(envs):
        env.reset(options={"index": i})
        actions.append(f"<search>{env.task.meta['supporting_titles'][0]}</search>")
    SearchEnv.step_batch(envs, actions)  # warm the server and the connection

    def fresh():
        for i, env in enumerate(envs):
            env.reset(options={"index": i})
        return (envs, actions), {}

    return fresh


def test_search_turn_batched(benchmark, setup_envs) -> None:
    results = benchmark.pedantic(SearchEnv.step_batch, setup=setup_envs, rounds=20, iterations=1)
    assert sum(r[4]["n_searches"] for r in results) == N_ENVS
    benchmark.extra_info["envs"] = N_ENVS


def test_search_turn_one_by_one(benchmark, setup_envs) -> None:
    def one_by_one(envs, actions):
        return [env.step(action) for env, action in zip(envs, actions)]

    results = benchmark.pedantic(one_by_one, setup=setup_envs, rounds=20, iterations=1)
    assert sum(r[4]["n_searches"] for r in results) == N_ENVS
    benchmark.extra_info["envs"] = N_ENVS
