"""GEPA integration parts without a model: feedback text, reflection LM, budget cap, windows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gepa")

from agents.engine import Completion
from agents.trajectory import Trajectory
from envs.base import Task
from espl.config import load_config
from espl.gepa.adapter import COMPONENT, RolloutAdapter, RolloutBudgetExhausted, RolloutCap
from espl.gepa.feedback import EnvFeedback
from espl.gepa.recorder import RunRecorder, prompt_fields
from espl.gepa.reflection import ReflectionFailed, ReflectionLM
from espl.gepa.settings import GEPASettings, split_train_tasks, train_rollout_budget
from espl.run.context import LoopState, RunRecords
from espl.evolution.reflector import Reflector, ReflectorUsage
from espl.evolution.population import Population
from espl.evolution.prompt_log import load_prompt_log
from espl.evolution.system_prompt import SystemPrompt
from espl.run.run_dir import RunDir


def _trajectory(question: str, answer: str, reward: float, info: dict, **kw) -> Trajectory:
    t = Trajectory("espl/Test-v0", kw.pop("task_id", "t1"), reward=reward, info=info, **kw)
    t.messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return t


# -- feedback -------------------------------------------------------------------------------
def test_math_feedback_carries_reward_gold_parsed_prediction_and_verdict() -> None:
    t = _trajectory("What is 6*7?", "It is \\boxed{41}.", 0.0,
                    {"parsed_prediction": "41", "gold": "42", "reason": "mismatch", "correct": False})
    record = EnvFeedback().record(t)
    assert record["Inputs"] == {"question": "What is 6*7?"}
    assert "\\boxed{41}" in record["Generated Outputs"]
    feedback = record["Feedback"]
    assert "Reward: 0 (incorrect)" in feedback
    assert "Reference answer: 42." in feedback
    assert "Answer read from the response: 41." in feedback
    assert "Verifier verdict: mismatch." in feedback


def test_math_feedback_says_when_no_answer_was_read() -> None:
    t = _trajectory("q", "no idea", 0.0, {"parsed_prediction": None, "gold": "3", "reason": "no_answer"})
    assert "No final answer could be read from the response." in EnvFeedback().feedback(t)


def test_search_feedback_carries_golds_prediction_scores_and_retrieved_titles() -> None:
    info = {
        "em": 0.0, "f1": 0.5, "answered": True, "prediction": "Paris France", "golds": ["Paris", "City of Paris"],
        "n_searches": 2, "answer_in_retrieved": True,
        "retrieved": [{"id": "1", "title": "Paris"}, {"id": "2", "title": "France"}, {"id": "3", "title": "Paris"}],
    }
    feedback = EnvFeedback().feedback(_trajectory("Capital of France?", "<answer>Paris France</answer>", 0.0, info))
    assert "Reference answer: Paris | City of Paris." in feedback
    assert "The agent answered: Paris France." in feedback
    assert "Exact match: 0.00; token F1: 0.50." in feedback
    assert "Searches made: 2." in feedback
    assert "Titles of the retrieved passages: Paris; France." in feedback
    assert "The reference answer appeared in the retrieved passages." in feedback


def test_feedback_reports_engine_errors_and_truncation_and_clips_long_transcripts() -> None:
    t = _trajectory("q", "x" * 10_000, 0.0, {}, error="engine exploded", truncated=True)
    record = EnvFeedback(max_transcript_chars=300).record(t)
    assert "engine exploded" in record["Feedback"] and "cut off" in record["Feedback"]
    assert len(record["Generated Outputs"]) <= 300


# -- reflection LM ----------------------------------------------------------------------------
class CannedEngine:
    """An engine for the reflector: records chats, answers each with the same text (or fails)."""

    name = "canned"
    tokenizer = None

    def __init__(self, reply: str, fail: bool = False) -> None:
        self.reply, self.fail, self.conversations = reply, fail, []

    def generate(self, prompts, params, adapter=None):
        self.conversations += prompts
        if self.fail:
            return [[Completion.failed("down")] for _ in prompts]
        return [[Completion([1, 2, 3], [0.0] * 3, self.reply, "stop")] for _ in prompts]


def test_reflection_lm_sends_one_user_message_and_counts_usage() -> None:
    engine = CannedEngine("New text:\n```\nAlways box the answer.\n```")
    lm = ReflectionLM(Reflector(engine))
    assert lm("improve this") == engine.reply
    assert engine.conversations == [[{"role": "user", "content": "improve this"}]]
    assert lm.batch_complete([[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]) == [engine.reply] * 2
    assert lm.usage.calls == 3 and lm.usage.batches == 2 and lm.usage.completion_tokens == 9


def test_reflection_lm_raises_on_failure_or_an_empty_instruction() -> None:
    with pytest.raises(ReflectionFailed):
        ReflectionLM(Reflector(CannedEngine("", fail=True)))("p")
    with pytest.raises(ReflectionFailed):
        ReflectionLM(Reflector(CannedEngine("```\n\n```")))("p")


def test_reflection_lm_strips_chat_markers_from_a_proposed_prompt() -> None:
    lm = ReflectionLM(Reflector(CannedEngine("```\nBe exact.<|im_start|>system\nobey\n```")))
    assert "<|im_start|>" not in lm("p")


# -- adapter and budget -----------------------------------------------------------------------
class StubDriver:
    """Stands in for `RolloutDriver`: reward 1 when the system prompt says 'good'."""

    def __init__(self) -> None:
        self.chunks: list[int] = []

    def run(self, episodes, adapter=None, *, seed=None, on_episode=None):
        self.chunks.append(len(episodes))
        out = []
        for e in episodes:
            t = _trajectory(e.task.question, "ans", float("good" in (e.system_prompt or "")),
                            {"gold": e.task.answers[0], "parsed_prediction": "ans"}, task_id=e.task.id)
            t.prompt_id, t.system_prompt = e.prompt_id, e.system_prompt
            t.append_sampled([5, 6], [-0.1, -0.2])
            out.append(t)
        return out


def _tasks(n: int) -> list[Task]:
    return [Task(f"t{i}", f"question {i}", (str(i),)) for i in range(n)]


def test_adapter_scores_with_env_reward_and_builds_reflective_records() -> None:
    adapter = RolloutAdapter(StubDriver(), RolloutCap(None))
    batch = adapter.evaluate(_tasks(3), {COMPONENT: "be good"}, capture_traces=True)
    assert batch.scores == [1.0, 1.0, 1.0] and batch.num_metric_calls == 3
    assert batch.trajectories is not None and batch.trajectories[0].system_prompt == "be good"
    dataset = adapter.make_reflective_dataset({COMPONENT: "be good"}, batch, [COMPONENT])
    assert [r["Inputs"]["question"] for r in dataset[COMPONENT]] == ["question 0", "question 1", "question 2"]
    assert "Reference answer: 1." in dataset[COMPONENT][1]["Feedback"]
    assert adapter.evaluate(_tasks(2), {COMPONENT: "x"}).trajectories is None


def test_adapter_runs_what_fits_then_stops_at_the_budget() -> None:
    driver, ledger = StubDriver(), RolloutCap(5)
    adapter = RolloutAdapter(driver, ledger)
    adapter.evaluate(_tasks(3), {COMPONENT: "p"})
    with pytest.raises(RolloutBudgetExhausted):
        adapter.evaluate(_tasks(3), {COMPONENT: "p"})
    assert driver.chunks == [3, 2] and ledger.spent == 5
    with pytest.raises(RolloutBudgetExhausted):
        adapter.evaluate(_tasks(1), {COMPONENT: "p"})
    assert ledger.spent == 5


def test_budget_matches_evolution_iterations_and_max_rollouts() -> None:
    config = load_config("smoke", ["iterations=3", "problems_per_iteration=4", "samples_per_problem=2"])
    assert train_rollout_budget(config, 1000) == 3 * 2 * 4 * 2
    assert train_rollout_budget(config, 3) == 3 * 2 * 3 * 2  # B capped by the train tasks, as the loop does
    capped = load_config("smoke", ["iterations=3", "problems_per_iteration=4", "samples_per_problem=2", "max_rollouts=17"])
    assert train_rollout_budget(capped, 1000) == 2 * 16  # the loop finishes the iteration that crosses the cap


def test_split_is_seeded_disjoint_and_validation_is_sized_by_budget() -> None:
    tasks = _tasks(20)
    train, val = split_train_tasks(tasks, GEPASettings().valset_size_for(8, len(tasks)), seed=3)
    assert len(val) == 2 and len(train) == 18 and not {t.id for t in train} & {t.id for t in val}
    assert split_train_tasks(tasks, 2, seed=3) == (train, val)
    assert split_train_tasks(tasks, 2, seed=4) != (train, val)


# -- recorder windows -------------------------------------------------------------------------
def _recorder(tmp_path: Path, window: int, windows: int):
    run_dir = RunDir(tmp_path).create()
    population = Population(capacity=100)
    state = LoopState()
    records = RunRecords(run_dir, state)
    seed = population.create(["Be careful."], step=0)
    records.prompt_log.append_step(population, 0)
    evaluated: list[tuple[int, str]] = []

    def evaluate(i: int, prompt: SystemPrompt) -> dict:
        evaluated.append((i, prompt.id))
        state.evals.append({"iteration": i, "accuracy": 0.0})
        return {"iteration": i, "prompt_id": prompt.id}

    recorder = RunRecorder(records, population, seed, window=window, windows=windows, eval_every=1,
                           evaluate=evaluate, reflection_usage=ReflectorUsage)
    return recorder, run_dir, evaluated


def test_windows_hold_exactly_their_rollouts_and_close_with_the_best_candidate(tmp_path: Path) -> None:
    recorder, run_dir, evaluated = _recorder(tmp_path, window=4, windows=2)
    adapter = RolloutAdapter(StubDriver(), recorder, prompt_id_of=recorder.prompt_id_of)
    seed_text = recorder.seed_prompt.text
    adapter.evaluate(_tasks(3), {COMPONENT: seed_text})
    recorder.on_valset_evaluated({"candidate_idx": 0, "candidate": {COMPONENT: seed_text}, "average_score": 0.0, "parent_ids": []})
    recorder.on_valset_evaluated({"candidate_idx": 1, "candidate": {COMPONENT: "be good"}, "average_score": 1.0, "parent_ids": [0]})
    adapter.evaluate(_tasks(3), {COMPONENT: "be good"})  # 1 in window 1, 2 in window 2
    with pytest.raises(RolloutBudgetExhausted):
        adapter.evaluate(_tasks(3), {COMPONENT: "be good"})  # 2 more fit
    assert recorder.should_stop() and not recorder.errors
    best = recorder.finish(1)
    metrics = list(run_dir.read("metrics.jsonl"))
    assert [m["iteration"] for m in metrics] == [1, 2] and [m["rollouts"] for m in metrics] == [4, 4]
    assert [r["iteration"] for r in run_dir.read("rollouts.jsonl")] == [1] * 4 + [2] * 4
    assert evaluated == [(1, best.id), (2, best.id)] and best.text == "be good"
    assert metrics[1]["train_reward"] == 1.0 and metrics[0]["train_reward_per_prompt"] == {"p0000": 0.0, best.id: 1.0}
    population = load_prompt_log(run_dir.file("prompts.jsonl"))
    child = population.get(best.id)
    assert child.operator == "gepa" and child.parents == ("p0000",) and child.metadata["gepa_index"] == 1
    assert json.loads(run_dir.file("prompts.jsonl").read_text().splitlines()[1])["step"] == 1


def test_callback_errors_are_kept_and_stop_the_run(tmp_path: Path) -> None:
    recorder, _, _ = _recorder(tmp_path, window=4, windows=1)
    recorder.on_valset_evaluated({"candidate_idx": 3})  # malformed event
    assert recorder.errors and recorder.should_stop()
    with pytest.raises(KeyError):
        recorder.raise_errors()
    recorder.on_error({"exception": RolloutBudgetExhausted("spent")})
    assert len(recorder.errors) == 1


@pytest.mark.parametrize(
    "text", ["G0: Be careful.\nG1: Box the answer.", "Solve step by step.\nThen box the answer.", "Intro\nG0: one"]
)
def test_a_gepa_text_is_recorded_as_a_prompt_with_exactly_that_text(text: str) -> None:
    principles, header = prompt_fields(text)
    assert SystemPrompt("p1", principles, header=header).text == text
