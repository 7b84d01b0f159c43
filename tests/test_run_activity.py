"""What a run's summary says about its learning, and the learning curve it draws."""

from __future__ import annotations

from pathlib import Path

from espl.evolution.population import Population
from espl.evolution.system_prompt import MUTATION_OPERATOR, SystemPrompt
from espl.run.activity import activity, explain
from espl.run.learning_curve import write_learning_curve

SEED = SystemPrompt("p0000", ("Check the question.",))
CHILD = SystemPrompt("p0001", ("Check the question.", "Search before answering."), parents=("p0000",),
                     operator=MUTATION_OPERATOR, created_step=1)


def _population(*prompts: SystemPrompt) -> Population:
    population = Population()
    for prompt in prompts:
        population.add(prompt)
    return population


def _no_child(reason: str) -> dict:
    return {"child": None, "reason": reason, "usage": {}, "notes": [], "trace": {}}


RECORDS = [
    {"iteration": 0, "eval": {"accuracy": 0.0}},
    {"iteration": 1, "train_reward": 0.0, "train": {"skipped": 1.0},
     "evolution": {"match": {"ranks": [0, 0], "played": False}, "mutation": {"child": "p0001", "reason": None}}},
    {"iteration": 2, "train_reward": 0.25, "train": {"loss": 0.1},
     "evolution": {"match": {"ranks": [0, 1], "played": True}, "mutation": _no_child("no mixed problem")}},
]


def test_activity_counts_steps_matches_and_children() -> None:
    found = activity(RECORDS, _population(SEED, CHILD))
    assert found["train_reward_mean"] == 0.125
    assert found["rl"] == {"optimizer_steps": 1, "skipped_iterations": 1}
    assert found["evolution"]["matches_played"] == 1
    assert found["evolution"]["children"] == {MUTATION_OPERATOR: 1}
    assert found["evolution"]["no_child"] == {"mutation: no mixed problem": 1}
    lines = explain({"activity": found})
    assert lines.pop(0) == "train reward: mean 0.125"
    assert lines[0].startswith("RL: 1 optimizer step(s); 1 iteration(s) without a step")
    assert lines[1] == "TrueSkill: 1 match(es) played"
    assert lines[2] == "children: 1 (mutation 1)"


def test_a_run_that_learned_nothing_says_why_in_one_line_each() -> None:
    records = [
        {"iteration": 1, "train_reward": 0.0, "train": {"skipped": 1.0},
         "evolution": {"match": {"played": False}, "mutation": _no_child("no problem had mixed outcomes")}},
        {"iteration": 2, "train_reward": 0.0, "train": {"skipped": 1.0},
         "evolution": {"match": {"played": False}, "mutation": _no_child("no problem had mixed outcomes")}},
    ]
    lines = explain({"activity": activity(records, _population(SEED))})
    assert lines == [
        "train reward: mean 0.000",
        "RL: 0 optimizer step(s); 2 iteration(s) without a step: every group's samples had the same reward,"
        " so there was nothing to learn from",
        "TrueSkill: 0 match(es) played (a match needs two distinct prompts in an iteration)",
        "children: none; mutation: no problem had mixed outcomes (x2)",
    ]


def test_rl_only_runs_explain_no_evolution() -> None:
    records = [{"iteration": 1, "train_reward": 0.5, "train": {"loss": 0.2}}]
    assert explain({"activity": activity(records, _population(SEED))}) == ["train reward: mean 0.500",
                                                                           "RL: 1 optimizer step(s)"]


def test_partial_credit_is_named_beside_the_train_reward() -> None:
    records = [{"iteration": 1, "train_reward": 0.375, "train": {"loss": 0.2}}]
    summary = {"activity": activity(records, _population(SEED)), "partial_credit": "token F1"}
    assert explain(summary)[0] == "train reward: mean 0.375 (partial credit: token F1; exact match in evaluation)"


def test_learning_curve_is_a_png_drawn_from_the_records(tmp_path: Path) -> None:
    path = tmp_path / "curve.png"
    write_learning_curve(path, RECORDS, "espl on hotpotqa")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5_000
    empty = tmp_path / "empty.png"
    write_learning_curve(empty, [], "nothing yet")
    assert empty.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
