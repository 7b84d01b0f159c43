"""Math datasets, splits, the single-turn env, and its registration."""

from __future__ import annotations

import warnings

import pytest
from gymnasium.utils.env_checker import check_env

import envs.math.register  # noqa: F401  (registers the math envs without loading other kinds)
from envs import registry
from envs.base import Task
from envs.math.datasets import DATASETS, load_tasks
from envs.math.env import MathEnv
from envs.math.verify import MathVerifier

EXPECTED_SIZES = {
    # name: (train, test, all)
    "aime": (90, 30, 120),
    "aime2022": (90, 30, 120),
    "aime2023": (90, 30, 120),
    "aime2024": (90, 30, 120),
    "aime2025": (90, 30, 120),
    "amc23": (20, 20, 40),
    "math500": (250, 250, 500),
    "gsm8k": (659, 660, 1319),
    "hmmt": (60, 30, 90),
    "dapo": (1798, 200, 2000),  # 1,800 less 2 train rows whose problem text is in test
}
ALIASES = {"aime": "espl/AIME-v0", "aime24": "espl/AIME2024-v0", "amc23": "espl/AMC23-v0",
           "math500": "espl/MATH500-v0", "gsm8k": "espl/GSM8K-v0", "hmmt": "espl/HMMT-v0",
           "dapo": "espl/DAPO-Math-v0"}


def math_env_infos() -> list[registry.EnvInfo]:
    # Read the registry directly so this works whether or not other env kinds import cleanly.
    return sorted((e for e in registry._ENVS.values() if e.kind == "math"), key=lambda e: e.id)


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(workers=2, timeout=5.0) as v:
        yield v.start()


# -- datasets ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED_SIZES))
def test_dataset_sizes_and_disjoint_deterministic_splits(name):
    train, test, everything = (load_tasks(name, split) for split in ("train", "test", "all"))
    assert (len(train), len(test), len(everything)) == EXPECTED_SIZES[name]
    train_ids, test_ids = {t.id for t in train}, {t.id for t in test}
    assert not train_ids & test_ids
    assert train_ids | test_ids <= {t.id for t in everything}
    asked = {" ".join(t.question.lower().split()) for t in test}
    left_out = [t for t in everything if t.id not in train_ids | test_ids]
    assert all(" ".join(t.question.lower().split()) in asked for t in left_out)  # only train-side duplicates
    assert [t.id for t in load_tasks(name, "test")] == [t.id for t in test]


def test_tasks_carry_problem_answer_and_meta():
    task = next(t for t in load_tasks("math500", "all") if t.id == "test/precalculus/807.json")
    assert task.question.startswith("Convert the point")
    assert task.answers == ("\\left( 3, \\frac{\\pi}{2} \\right)",)
    assert task.meta["level"] == 2 and task.meta["subject"] == "Precalculus"
    assert task.meta["dataset"] == "math500" and task.meta["source"] == "MATH-500"
    assert all(t.answers[0] and t.question for name in DATASETS for t in load_tasks(name, "all"))


def test_date_based_splits():
    assert {t.meta["year"] for t in load_tasks("aime", "train")} == {2022, 2023, 2024}
    assert {t.meta["year"] for t in load_tasks("aime", "test")} == {2025}
    assert {t.meta["year"] for t in load_tasks("aime2024", "test")} == {2024}
    assert {t.meta["source"] for t in load_tasks("hmmt", "test")} == {"HMMT November 2025"}


def test_unknown_dataset_or_split_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown math dataset"):
        load_tasks("nope")
    with pytest.raises(ValueError, match="unknown split"):
        load_tasks("amc23", "validation")


# -- env ---------------------------------------------------------------------------------


def test_reset_builds_the_prompt_and_step_rewards_the_gold_answer(verifier):
    env = MathEnv(dataset="amc23", split="test", verifier=verifier)
    obs, info = env.reset(options={"index": 0})
    task = env.tasks[0]
    assert info["task_id"] == task.id
    assert len(obs) == 1 and obs[0]["role"] == "user"
    assert obs[0]["content"].startswith(task.question.strip()) and "\\boxed{}" in obs[0]["content"]

    obs, reward, terminated, truncated, info = env.step(f"Reasoning... so the answer is \\boxed{{{task.answers[0]}}}.")
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["correct"] is True and info["reason"] == "match"
    assert info["gold"] == task.answers[0] and info["parsed_prediction"] == task.answers[0]
    assert obs[-1]["role"] == "assistant"
    with pytest.raises(RuntimeError):
        env.step("again")


def test_wrong_or_missing_answers_get_zero(verifier):
    env = MathEnv(dataset="math500", split="test", verifier=verifier)
    env.reset(options={"task": Task("t", "What is 1/2 + 1/4?", ("\\frac{3}{4}",))})
    _, reward, _, _, info = env.step("\\boxed{0.75}")
    assert reward == 1.0
    for reply in ("\\boxed{\\frac{2}{3}}", "I give up", ""):
        env.reset(options={"task": Task("t", "What is 1/2 + 1/4?", ("\\frac{3}{4}",))})
        _, reward, _, _, info = env.step(reply)
        assert reward == 0.0 and info["correct"] is False and info["gold"] == "\\frac{3}{4}"


def test_any_accepted_answer_counts(verifier):
    env = MathEnv(tasks=[Task("t", "Name a root of x^2=4.", ("2", "-2"))], verifier=verifier)
    env.reset()
    _, reward, _, _, info = env.step("\\boxed{-2}")
    assert reward == 1.0 and info["gold"] == "-2"


def test_step_batch_equals_stepping_one_by_one(verifier, monkeypatch):
    tasks = load_tasks("math500", "test")[:12]
    replies = []
    for i, task in enumerate(tasks):
        variants = [f"\\boxed{{{task.answers[0]}}}", "\\boxed{0}", f"The final answer is ${task.answers[0]}$.", "no idea"]
        replies.append(variants[i % len(variants)])
    one_by_one, batched = [], []
    for i, reply in enumerate(replies):
        env = MathEnv(dataset="math500", split="test", verifier=verifier)
        env.reset(options={"index": i})
        one_by_one.append(env.step(reply))
    envs = [MathEnv(dataset="math500", split="test", verifier=verifier) for _ in replies]
    for i, env in enumerate(envs):
        env.reset(options={"index": i})
    calls = []
    real = verifier.score_many
    monkeypatch.setattr(verifier, "score_many", lambda pairs: calls.append(len(pairs)) or real(pairs))
    batched = MathEnv.step_batch(envs, replies)
    assert calls == [len(replies)]  # one verification pass for the whole batch
    assert batched == one_by_one
    assert sum(r[1] for r in batched) >= 3


def test_step_batch_refuses_finished_envs(verifier):
    env = MathEnv(dataset="amc23", verifier=verifier)
    env.reset(seed=1)
    env.step("\\boxed{1}")
    with pytest.raises(RuntimeError):
        MathEnv.step_batch([env], ["\\boxed{1}"])


def test_render_ansi_shows_the_chat(verifier):
    env = MathEnv(dataset="gsm8k", render_mode="ansi", verifier=verifier)
    env.reset(seed=3)
    env.step("\\boxed{1}")
    text = env.render()
    assert "[user]" in text and "[assistant]\n\\boxed{1}" in text


# -- registry ----------------------------------------------------------------------------


def test_every_math_env_is_registered_with_its_alias():
    ids = {e.id for e in math_env_infos()}
    assert set(ALIASES.values()) <= ids
    assert {"espl/AIME2022-v0", "espl/AIME2023-v0", "espl/AIME2025-v0"} <= ids
    by_alias = {e.alias: e.id for e in math_env_infos()}
    for alias, env_id in ALIASES.items():
        assert by_alias[alias] == env_id


@pytest.mark.parametrize("env_id", [e.id for e in math_env_infos()])
def test_check_env_passes(env_id, verifier):
    env = registry.make(env_id, verifier=verifier)
    assert isinstance(env, MathEnv) and env.split == "test"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gymnasium warns about render fps; not an error
        check_env(env, skip_render_check=False)
    train = registry.make(env_id, split="train", verifier=verifier)
    assert {t.id for t in train.tasks}.isdisjoint(t.id for t in env.tasks)


def test_make_by_alias():
    env = registry.make("aime24")
    assert env.spec.id == "espl/AIME2024-v0" and len(env.tasks) == 30
    assert all(t.meta["year"] == 2024 for t in env.tasks)
