"""GEPA on gsm8k with scripted models: our feedback reaches its reflection, its candidate is used.

The policy answers a task correctly exactly when its system prompt holds a key phrase; the
reflector always proposes a prompt with that phrase. So GEPA must accept the proposal, and
every later rollout (and the run's final evaluation) must run under it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gepa")

import gepa

from agents.engine import Completion, SamplingParams
from agents.models import load_tokenizer
from agents.rollout import RolloutConfig, RolloutDriver
from envs import registry
from espl.run import builder as factory
from espl.config import load_config
from espl.gepa.adapter import COMPONENT, RolloutAdapter, RolloutCap
from espl.gepa.reflection import ReflectionLM
from espl.evolution.reflector import Reflector
from espl.evolution.prompt_log import load_prompt_log
from espl.run.run_dir import RunDir
from espl.run.train import run_training

KEY = "ALWAYS BOX"
PROPOSAL = f"{KEY} the final number as \\boxed{{n}}."
REFLECTOR_REPLY = f"Here is a better instruction:\n```\n{PROPOSAL}\n```"


class AnswerKeyEngine:
    """A policy that knows every answer but gives it only under a system prompt holding `KEY`."""

    name = "answer-key"

    def __init__(self, tokenizer, answers: dict[str, str]) -> None:
        self._tokenizer, self.answers = tokenizer, answers
        self.prompts: list[str] = []

    @property
    def tokenizer(self):
        return self._tokenizer

    def generate(self, prompts, params, adapter=None):
        out = []
        for ids in prompts:
            text = self._tokenizer.decode(ids)
            self.prompts.append(text)
            answer = next((a for q, a in self.answers.items() if q in text), None)
            reply = f"So the answer is \\boxed{{{answer}}}." if KEY in text and answer else "I am not sure."
            reply_ids = self._tokenizer.encode(reply, add_special_tokens=False)
            out.append([Completion(reply_ids, [-0.1] * len(reply_ids), reply, "stop")])
        return out

    def release_turns(self) -> None:
        pass


class CannedReflectorEngine:
    name = "canned"
    tokenizer = None

    def __init__(self) -> None:
        self.conversations: list[list[dict[str, str]]] = []

    def generate(self, prompts, params, adapter=None):
        self.conversations += prompts
        return [[Completion([1, 2, 3, 4], [0.0] * 4, REFLECTOR_REPLY, "stop")] for _ in prompts]


class QuietLog:
    def log(self, message: str) -> None:
        pass


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


def _policy(tokenizer, split: str) -> tuple[AnswerKeyEngine, RolloutDriver]:
    tasks = registry.make("gsm8k", split=split).tasks
    engine = AnswerKeyEngine(tokenizer, {t.question.strip()[:60]: t.answers[0] for t in tasks})
    driver = RolloutDriver(engine, lambda: registry.make("gsm8k", split=split), RolloutConfig(SamplingParams(max_tokens=32)))
    return engine, driver


def test_gepa_reflects_on_our_env_feedback_and_adopts_the_proposed_prompt(tokenizer) -> None:
    policy, driver = _policy(tokenizer, "train")
    tasks = driver.envs(1)[0].tasks[:8]
    ledger = RolloutCap(14)
    reflector = CannedReflectorEngine()
    datasets: list[dict] = []

    class KeepDatasets:
        def on_reflective_dataset_built(self, event) -> None:
            datasets.append(event["dataset"])

    result = gepa.optimize(
        seed_candidate={COMPONENT: "G0: Be brief."}, trainset=tasks[:5], valset=tasks[5:],
        adapter=RolloutAdapter(driver, ledger), reflection_lm=ReflectionLM(Reflector(reflector)),
        reflection_minibatch_size=3, max_metric_calls=14, stop_callbacks=[lambda state: ledger.spent >= 14],
        callbacks=[KeepDatasets()], logger=QuietLog(), raise_on_exception=False, seed=0,
    )
    # Seed on 3 validation tasks, parent and child on a minibatch of 3, the child on the
    # validation set, then 2 of the next minibatch: the budget is spent exactly.
    assert ledger.spent == 14
    assert result.best_candidate == {COMPONENT: PROPOSAL}
    assert result.val_aggregate_scores == [0.0, 1.0]

    # Our feedback went into GEPA's reflective dataset and into the prompt the reflector read.
    records = datasets[0][COMPONENT]
    assert len(records) == 3 and len(reflector.conversations) == 1
    prompt = reflector.conversations[0][0]["content"]
    assert "G0: Be brief." in prompt
    for record in records:
        question = " ".join(record["Inputs"]["question"].split())
        gold = next(a for q, a in policy.answers.items() if " ".join(q.split()) in question)
        assert f"Reference answer: {gold}." in record["Feedback"]
        assert "Reward: 0 (incorrect)" in record["Feedback"]
        assert "No final answer could be read from the response." in record["Feedback"]
        assert record["Feedback"] in prompt and record["Inputs"]["question"].split("\n")[0] in prompt
    assert "I am not sure." in prompt

    # After the reflection, rollouts run under GEPA's candidate.
    assert sum(KEY in p for p in policy.prompts) == 3 + 3 + 2


def test_the_gepa_method_records_candidates_and_evaluates_the_best_one(tokenizer, tmp_path: Path, monkeypatch) -> None:
    policy, _ = _policy(tokenizer, "train")
    test_policy, _ = _policy(tokenizer, "test")
    policy.answers.update(test_policy.answers)
    reflector = CannedReflectorEngine()
    monkeypatch.setattr(factory, "build_policy", lambda plan, **kw: factory.Policy(policy))
    monkeypatch.setattr(factory, "reflector_for", lambda plan, policy: Reflector(reflector))
    config = load_config("smoke", [
        'method="gepa"', 'env.name="gsm8k"', "iterations=2", "problems_per_iteration=3", "eval_limit=3",
    ])
    run_dir = RunDir(tmp_path / "run")
    summary = run_training(config, run_dir)

    # Budget: 2 iterations x 2 prompts x 3 problems x 2 samples, as `evolution` would spend.
    assert summary["budget"]["train_rollouts"] == 24 and summary["gepa"]["train_rollout_budget"] == 24
    assert summary["budget"]["reflector_calls"] == len(reflector.conversations) == 1
    metrics = list(run_dir.read("metrics.jsonl"))
    assert [m["iteration"] for m in metrics] == [0, 1, 2] and [m.get("rollouts") for m in metrics] == [None, 12, 12]
    # Window 1 closes before GEPA has validated its proposal; window 2 with the proposal as best.
    assert [m["eval"]["prompt_id"] for m in metrics] == ["p0000", "p0000", "p0001"]
    assert [m["eval"]["accuracy"] for m in metrics] == [0.0, 0.0, 1.0]
    assert summary["final"]["accuracy"] == 1.0
    assert summary["eval_prompt"] == {"id": "p0001", "principles": [], "text": PROPOSAL, "operator": "gepa", "parents": ["p0000"]}

    population = load_prompt_log(run_dir.file("prompts.jsonl"))
    child = population.get("p0001")
    assert child.text == PROPOSAL and child.operator == "gepa" and child.parents == ("p0000",)
    rollouts = [json.loads(line) for line in run_dir.file("rollouts.jsonl").read_text().splitlines()]
    final_eval = [r for r in rollouts if r["phase"] == "eval" and r["iteration"] == 2]
    assert final_eval and all(r["system_prompt"] == PROPOSAL and r["prompt_id"] == "p0001" for r in final_eval)
    assert sum(r["phase"] == "train" for r in rollouts) == 24
