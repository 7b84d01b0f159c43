"""The Search-R1 generation budget: at most 4 searches, then a final turn, so at most 5 replies.

Search-R1's loop runs at most `max_turns` (4) generations in which a search is executed, then
one final generation with search off. Every reply spends a turn, an invalid one included (it
gets a corrective message and the episode goes on), so no episode takes a sixth generation,
whatever the replies are. Stepped one by one and through `step_batch`, which the rollout
driver uses.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from envs.base import Task
from envs.retrieval.types import Passage
from envs.search.env import ANSWER_NOW, SearchEnv

SEARCH_R1_MAX_GENERATIONS = 5

REPLY_SCRIPTS = {
    "all invalid": ["no tags at all"] * 8,
    "empty queries": ["<search> </search>"] * 8,
    "invalid first": ["junk", *["<search>q</search>"] * 7],
    "invalid last": [*["<search>q</search>"] * 4, *["junk"] * 4],
    "interleaved": ["<search>a</search>", "junk", "<search>b</search>", "<search></search>", "<search>c</search>"] * 2,
    "searches only": ["<search>q</search>"] * 8,
}
TASK = Task("t1", "Who directed the 1994 film Ed Wood?", ("Tim Burton",))


class EchoRetriever:
    """One passage per query, titled by the query; records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        self.calls.append(list(queries))
        return [[Passage(f"id-{q}", q, f"text about {q}")] for q in queries]


def make_env(**kwargs) -> SearchEnv:
    return SearchEnv(tasks=[TASK], retriever=EchoRetriever(), **kwargs)


def generations_until_done(env: SearchEnv, replies: Sequence[str]) -> int:
    """Step `replies` one by one until the episode ends; how many replies it took."""
    env.reset(options={"task": TASK})
    for n, reply in enumerate(replies, 1):
        *_, terminated, truncated, _ = env.step(reply)
        if terminated or truncated:
            return n
    pytest.fail(f"the episode was still running after {len(replies)} replies")


@pytest.mark.parametrize("script", sorted(REPLY_SCRIPTS))
def test_an_episode_ends_within_five_generations_whatever_the_replies(script: str) -> None:
    env = make_env()
    assert generations_until_done(env, REPLY_SCRIPTS[script]) <= SEARCH_R1_MAX_GENERATIONS
    assert env.n_searches <= env.max_searches == 4
    assert env.max_turns == SEARCH_R1_MAX_GENERATIONS  # the rollout driver's cap agrees


def test_step_batch_keeps_the_same_budget() -> None:
    envs = [make_env() for _ in REPLY_SCRIPTS]
    for env in envs:
        env.reset(options={"task": TASK})
    scripts = list(REPLY_SCRIPTS.values())
    running = list(range(len(envs)))
    for generation in range(1, 9):
        results = SearchEnv.step_batch([envs[i] for i in running], [scripts[i][generation - 1] for i in running])
        running = [i for i, result in zip(running, results) if not result[2]]
        if not running:
            break
    assert not running and generation <= SEARCH_R1_MAX_GENERATIONS


def test_an_invalid_reply_spends_a_search_turn() -> None:
    env = make_env()
    env.reset(options={"task": TASK})
    env.step("junk")
    for n in range(1, 4):
        obs, _, terminated, _, info = env.step(f"<search>query {n}</search>")
        assert not terminated and info["n_searches"] == n
    assert ANSWER_NOW in obs[-1]["content"]  # the fifth generation is the final one
    _, reward, terminated, _, info = env.step("<answer>Tim Burton</answer>")
    assert terminated and reward == 1.0 and info["n_searches"] == 3


def test_the_budget_follows_max_searches_and_max_turns() -> None:
    invalid, searches = ["junk"] * 12, ["<search>q</search>"] * 12
    assert generations_until_done(make_env(max_searches=2), invalid) == 3
    assert generations_until_done(make_env(max_searches=0), invalid) == 1
    assert generations_until_done(make_env(max_turns=8), invalid) == 8  # room for invalid replies
    env = make_env(max_turns=8)
    assert generations_until_done(env, searches) == 5 and env.n_searches == 4  # never a fifth search
