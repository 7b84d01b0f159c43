"""SearchEnv turn rules, rewards and batched retrieval, with an in-test title-lookup retriever."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import envs.search.register  # noqa: F401  (registers the espl/* search ids with Gymnasium)
from envs.base import Task
from envs.datasets import load_rows
from envs.retrieval.types import Passage, Retriever
from envs.search import env as env_module
from envs.search.env import ANSWER_NOW, SearchEnv
from envs.search.protocol import INFO_CLOSE, INFO_OPEN, WordCounter
from envs.search.register import SEARCH_ENVS


class TitleRetriever:
    """A fake retriever over the real HotpotQA corpus: passages whose title is the query.

    Queries that name no title get the first `topk` passages of the corpus, so every query
    returns something, as a real retriever would. Every call is recorded.
    """

    def __init__(self) -> None:
        self.by_title: dict[str, list[Passage]] = defaultdict(list)
        self.fallback: list[Passage] = []
        for row in load_rows("hotpotqa_corpus"):
            passage = Passage(row["id"], row["title"], row["text"])
            self.by_title[row["title"].lower()].append(passage)
            if len(self.fallback) < 10:
                self.fallback.append(passage)
        self.calls: list[tuple[list[str], int]] = []

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        self.calls.append((list(queries), topk))
        return [(self.by_title.get(q.strip().lower()) or self.fallback)[:topk] for q in queries]


@pytest.fixture(scope="module")
def corpus_retriever() -> TitleRetriever:
    return TitleRetriever()


@pytest.fixture
def retriever(corpus_retriever: TitleRetriever) -> TitleRetriever:
    corpus_retriever.calls.clear()
    return corpus_retriever


def make_env(env_id: str = "espl/HotpotQA-Comparison-v0", **kwargs) -> SearchEnv:
    env = gym.make(env_id, **kwargs).unwrapped
    assert isinstance(env, SearchEnv)
    return env


def test_fake_retriever_meets_the_protocol(retriever: TitleRetriever) -> None:
    assert isinstance(retriever, Retriever)


def test_scripted_policy_that_searches_the_gold_titles_scores_one(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever)
    for index in range(5):
        _, _ = env.reset(options={"index": index})
        task = env.task
        titles = task.meta["supporting_titles"]
        assert 1 <= len(titles) <= env.max_searches
        for n, title in enumerate(titles, 1):
            reply = f"<think>look up {title}</think><search>{title}</search>"
            obs, reward, terminated, truncated, info = env.step(reply)
            assert (reward, terminated, truncated) == (0.0, False, False)
            assert info["n_searches"] == n
            assert obs[-1]["role"] == "user"
            assert obs[-1]["content"].startswith(f"{INFO_OPEN}Doc 1(Title: {title})")
        obs, reward, terminated, truncated, info = env.step(f"<answer>{task.answers[0]}</answer>")
        assert (reward, terminated, truncated) == (1.0, True, False)
        assert info["em"] == 1.0 and info["f1"] == 1.0
        assert info["prediction"] == task.answers[0] and info["golds"] == list(task.answers)
        assert {r["title"] for r in info["retrieved"]} == set(titles)
        assert obs[-1] == {"role": "assistant", "content": f"<answer>{task.answers[0]}</answer>"}


def test_answer_in_retrieved_separates_retrieval_from_reading(retriever: TitleRetriever) -> None:
    task = Task("t1", "Who directed the 1994 film Ed Wood?", ("Tim Burton",))
    env = SearchEnv(tasks=[task], retriever=retriever)
    env.reset(options={"task": task})
    env.step("<search>Ed Wood (film)</search>")
    *_, info = env.step("<answer>Johnny Depp</answer>")
    assert info["em"] == 0.0 and info["answer_in_retrieved"] is True
    env.reset(options={"task": task})
    *_, info = env.step("<answer>Tim Burton</answer>")
    assert info["em"] == 1.0 and info["answer_in_retrieved"] is False and info["n_searches"] == 0


def test_partial_credit_rewards_the_answers_f1_and_keeps_exact_match_in_info(retriever: TitleRetriever) -> None:
    task = Task("t1", "Who is the lead singer of Dark Tranquillity?", ("Bengt Mikael Stanne",))
    graded, exact = SearchEnv(tasks=[task], retriever=retriever, partial_credit=True), SearchEnv(tasks=[task], retriever=retriever)
    for answer, f1 in (("Mikael Stanne", 0.8), ("Johnny Depp", 0.0), ("bengt mikael stanne.", 1.0)):
        rewards = []
        for env in (graded, exact):
            env.reset(options={"task": task})
            _, reward, terminated, _, info = env.step(f"<answer>{answer}</answer>")
            assert terminated and info["f1"] == pytest.approx(f1) and info["em"] == float(f1 == 1.0)
            rewards.append(reward)
        assert rewards == [pytest.approx(f1), float(f1 == 1.0)]
    graded.reset(options={"task": task})
    assert [graded.step(reply)[1] for reply in ("<think>no action</think>", "still nothing")] == [0.0, 0.0]


def test_four_searches_then_a_forced_answer(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever)
    env.reset(options={"index": 0})
    for n in range(1, 5):
        obs, _, terminated, _, info = env.step(f"<search>query {n}</search>")
        assert not terminated and info["n_searches"] == n
        assert (ANSWER_NOW in obs[-1]["content"]) is (n == 4)
    assert len(retriever.calls) == 4
    obs, reward, terminated, _, info = env.step("<search>one more</search>")
    assert terminated and reward == 0.0
    assert len(retriever.calls) == 4  # the fifth search was not executed
    assert info["answered"] is False and info["n_searches"] == 4 and info["prediction"] == ""
    assert obs[-1]["role"] == "assistant"  # no env reply after the final turn


def test_final_turn_answer_is_scored(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, max_searches=1)
    env.reset(options={"index": 0})
    obs, *_ = env.step("<search>anything</search>")
    assert ANSWER_NOW in obs[-1]["content"]
    _, reward, terminated, _, info = env.step(f"<answer>{env.task.answers[0]}</answer>")
    assert terminated and reward == 1.0 and info["n_searches"] == 1


def test_invalid_action_gets_a_correction_and_the_episode_continues(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever)
    env.reset(options={"index": 0})
    obs, reward, terminated, _, info = env.step("I think the answer is Paris.")
    assert (reward, terminated) == (0.0, False)
    assert info["action"] == "invalid"
    correction = obs[-1]
    assert correction["role"] == "user"
    assert "<search>" in correction["content"] and "<answer>" in correction["content"]
    assert ANSWER_NOW not in correction["content"]
    obs, *_ = env.step("<search>  </search>")
    assert "empty" in obs[-1]["content"]
    assert retriever.calls == []
    _, reward, terminated, _, _ = env.step(f"<answer>{env.task.answers[0]}</answer>")
    assert terminated and reward == 1.0


def test_invalid_replies_count_toward_the_turn_cap(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, max_searches=4)
    assert env.max_turns == 5
    env.reset(options={"index": 0})
    for turn in range(1, 5):
        obs, _, terminated, _, info = env.step("no tags at all")
        assert not terminated and info["turn"] == turn
        assert (ANSWER_NOW in obs[-1]["content"]) is (turn == 4)
    _, reward, terminated, _, info = env.step("still no tags")
    assert terminated and reward == 0.0 and info["turn"] == 5 and info["answered"] is False


def test_every_episode_ends_within_max_turns(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, max_searches=2, max_turns=5)
    replies = ["junk", "<search>a</search>", "<search></search>", "<search>b</search>", "<search>c</search>"]
    for start in range(len(replies)):
        env.reset(options={"index": 0})
        for turn in range(1, 6):
            *_, terminated, _, _ = env.step(replies[(start + turn) % len(replies)])
            if terminated:
                break
        assert terminated and env.turn <= 5


def test_observation_is_truncated_to_the_budget(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, max_obs_tokens=30, topk=3)
    env.reset(options={"index": 0})
    obs, *_ = env.step("<search>no such title, fallback passages</search>")
    content = obs[-1]["content"]
    assert content.startswith(INFO_OPEN) and content.endswith(INFO_CLOSE)
    assert 25 <= WordCounter().count(content) <= 30


def test_tokenizer_kwarg_sets_the_budget_unit(retriever: TitleRetriever) -> None:
    class CharTokenizer:
        def encode(self, text: str) -> list[int]:
            return [ord(c) for c in text]

        def decode(self, ids: list[int]) -> str:
            return "".join(map(chr, ids))

    env = make_env(retriever=retriever, max_obs_tokens=120, tokenizer=CharTokenizer())
    env.reset(options={"index": 0})
    obs, *_ = env.step("<search>fallback</search>")
    assert len(obs[-1]["content"]) <= 120 and obs[-1]["content"].endswith(INFO_CLOSE)


def test_reply_role_can_be_tool(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, reply_role="tool")
    env.reset(options={"index": 0})
    obs, *_ = env.step("<search>x</search>")
    assert obs[-1]["role"] == "tool" and obs[0]["role"] == "user"
    with pytest.raises(ValueError, match="reply_role"):
        make_env(retriever=retriever, reply_role="system")


class CountingRetriever:
    """Returns one passage per query naming the query, and records each call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def retrieve(self, queries: Sequence[str], topk: int = 3) -> list[list[Passage]]:
        self.calls.append(list(queries))
        return [[Passage(f"id-{q}", q, f"text about {q}")] for q in queries]


def test_step_batch_sends_all_searches_in_one_call() -> None:
    shared = CountingRetriever()
    envs = [make_env(retriever=shared) for _ in range(5)]
    for i, env in enumerate(envs):
        env.reset(options={"index": i})
    actions = [
        "<search>alpha</search>",
        f"<answer>{envs[1].task.answers[0]}</answer>",
        "<search>beta</search>",
        "no action here",
        "<think>hmm</think><search>gamma</search>",
    ]
    results = SearchEnv.step_batch(envs, actions)
    assert shared.calls == [["alpha", "beta", "gamma"]]
    assert [r[2] for r in results] == [False, True, False, False, False]
    assert results[1][1] == 1.0
    assert results[0][0][-1]["content"].startswith(f"{INFO_OPEN}Doc 1(Title: alpha)")
    assert results[4][0][-1]["content"].startswith(f"{INFO_OPEN}Doc 1(Title: gamma)")
    assert results[3][4]["action"] == "invalid"
    assert [env.n_searches for env in envs] == [1, 0, 1, 0, 1]

    # Stepping the same actions one by one gives the same transcripts and rewards.
    single = CountingRetriever()
    solo = [make_env(retriever=single) for _ in range(5)]
    for i, env in enumerate(solo):
        env.reset(options={"index": i})
    one_by_one = [env.step(a) for env, a in zip(solo, actions)]
    assert [r[:4] for r in one_by_one] == [r[:4] for r in results]
    assert len(single.calls) == 3


def test_step_batch_without_searches_makes_no_call() -> None:
    shared = CountingRetriever()
    envs = [make_env(retriever=shared) for _ in range(3)]
    for env in envs:
        env.reset(options={"index": 0})
    SearchEnv.step_batch(envs, ["<answer>x</answer>", "junk", "<answer>y</answer>"])
    assert shared.calls == []


def test_step_batch_groups_by_retriever_and_skips_final_turn_searches() -> None:
    first, second = CountingRetriever(), CountingRetriever()
    envs = [make_env(retriever=first), make_env(retriever=second), make_env(retriever=first, max_searches=0)]
    for env in envs:
        env.reset(options={"index": 0})
    results = SearchEnv.step_batch(envs, ["<search>a</search>", "<search>b</search>", "<search>c</search>"])
    assert first.calls == [["a"]] and second.calls == [["b"]]
    assert results[2][2] is True and results[2][1] == 0.0  # no searches allowed: final turn, not executed


def test_step_batch_refuses_finished_envs_before_retrieving() -> None:
    shared = CountingRetriever()
    envs = [make_env(retriever=shared) for _ in range(2)]
    for env in envs:
        env.reset(options={"index": 0})
    envs[1].step("<answer>done</answer>")
    with pytest.raises(RuntimeError):
        SearchEnv.step_batch(envs, ["<search>a</search>", "<search>b</search>"])
    assert shared.calls == []
    with pytest.raises(ValueError):
        SearchEnv.step_batch(envs, ["<search>a</search>"])


def test_local_server_is_started_lazily_at_the_first_search(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[str] = []
    fake = CountingRetriever()

    def fake_local_url() -> str:
        started.append("local")
        return "http://127.0.0.1:1"

    monkeypatch.setattr(env_module, "local_server_url", fake_local_url)
    monkeypatch.setattr(env_module, "client_for", lambda url: fake if url == "http://127.0.0.1:1" else None)
    env = make_env()
    env.reset(options={"index": 0})
    env.step("not an action")
    assert started == [] and fake.calls == []
    env.step("<search>q</search>")
    env.step("<search>r</search>")
    assert started == ["local"] and fake.calls == [["q"], ["r"]]


def test_retriever_url_is_used_instead_of_the_local_server(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = CountingRetriever()
    urls: list[str] = []
    monkeypatch.setattr(env_module, "local_server_url", lambda: pytest.fail("local server must not start"))
    monkeypatch.setattr(env_module, "client_for", lambda url: urls.append(url) or fake)
    env = make_env(retriever_url="http://example.invalid:8000")
    env.reset(options={"index": 0})
    env.step("<search>q</search>")
    assert urls == ["http://example.invalid:8000"] and fake.calls == [["q"]]


def test_bad_constructor_arguments() -> None:
    with pytest.raises(KeyError, match="unknown search dataset"):
        SearchEnv("nope")
    with pytest.raises(ValueError, match="split"):
        SearchEnv("nq", "validation")
    with pytest.raises(ValueError):
        SearchEnv("nq", topk=0)
    with pytest.raises(ValueError):
        SearchEnv("nq", max_turns=0)


@pytest.mark.parametrize("env_id", [row[0] for row in SEARCH_ENVS])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_check_env_passes(env_id: str, retriever: TitleRetriever) -> None:
    env = make_env(env_id, retriever=retriever)
    check_env(env, skip_render_check=False)
    env.reset(seed=3)
    obs, *_ = env.step("<search>x</search>")
    assert env.observation_space.contains(obs)


def test_render_ansi_shows_the_transcript(retriever: TitleRetriever) -> None:
    env = make_env(retriever=retriever, render_mode="ansi")
    env.reset(options={"index": 0})
    env.step("<search>q</search>")
    text = env.render()
    assert "[assistant]\n<search>q</search>" in text and INFO_OPEN in text


def test_registry_aliases_and_kind(retriever: TitleRetriever) -> None:
    from envs.registry import info, list_envs, make

    search_ids = {e.id for e in list_envs() if e.kind == "search"}
    assert search_ids == {row[0] for row in SEARCH_ENVS}
    aliases = {"hotpotqa": "espl/HotpotQA-v0", "2wiki": "espl/2WikiMultiHopQA-v0", "musique": "espl/MuSiQue-v0"}
    for alias, env_id in aliases.items():
        assert info(alias).id == env_id
    env = make("hotpotqa-small", split="train", retriever=retriever)
    assert isinstance(env, SearchEnv) and env.dataset == "hotpotqa_small" and len(env.tasks) == 196
    assert "NQ" in info("hotpotqa-small").description  # says it is not the paper's NQ + HotpotQA mix
    with pytest.raises(KeyError):
        info("hotpotqa-espl")


def test_observations_stay_in_the_space_with_invisible_characters(retriever: TitleRetriever) -> None:
    title = next(t for t, ps in retriever.by_title.items() if "\u200e" in ps[0].text)
    env = make_env(retriever=retriever)
    env.reset(options={"index": 0})
    obs, *_ = env.step(f"<search>{title}</search>")
    assert "\u200e" not in obs[-1]["content"] and env.observation_space.contains(obs)
