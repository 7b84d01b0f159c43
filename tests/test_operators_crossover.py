"""Crossover: strict winners per problem, the one reflector call, the child and its lineage."""

from __future__ import annotations

import json
import math

import pytest
from test_operators_support import ScriptedEngine, constant, fenced, trajectory

from espl.evolution.operators import CrossoverConfig, best_prompt, crossover, strict_winners
from espl.evolution.reflector import Reflector
from espl.evolution.population import Population
from espl.evolution.system_prompt import CROSSOVER_OPERATOR
from espl.evolution.rating import RatingSystem


def rollouts_for(prompt_id: str, rewards: dict[str, list[float]]) -> list:
    return [
        trajectory(task, r, prompt_id, question=f"Question {task}?", gold=f"gold-{task}")
        for task, values in rewards.items()
        for r in values
    ]


def test_strict_winners_need_a_strictly_highest_mean():
    rollouts = (
        rollouts_for("a", {"t1": [1, 1], "t2": [1, 0], "t3": [0, 0], "t4": [1, 0]})
        + rollouts_for("b", {"t1": [1, 0], "t2": [1, 0], "t3": [1, 0], "t4": [1, 1, 0, 0]})
        + rollouts_for("c", {"t1": [0, 0], "t2": [0, 0], "t3": [0, 0], "t4": [0, 0]})
    )
    assert strict_winners(rollouts) == {"t1": "a", "t3": "b"}  # t2 and t4 are ties at the top


def test_strict_winners_ignore_errors_lone_prompts_and_other_ids():
    rollouts = rollouts_for("a", {"t1": [0], "t2": [1]}) + rollouts_for("b", {"t1": [0]})
    rollouts.append(trajectory("t1", 1.0, "b", error="engine error"))  # not a real success
    rollouts.append(trajectory("t1", 1.0, "z"))
    assert strict_winners(rollouts, ["a", "b"]) == {}  # t1 tied, t2 only ran under a
    assert strict_winners(rollouts) == {"t1": "z"}


def test_best_prompt_ties_go_to_the_earliest():
    population = Population()
    a = population.create(["Rule a."], step=0)
    b = population.create(["Rule b."], step=0)
    assert best_prompt([a, b], {a.id: 0.5, b.id: 0.5}) is a
    assert best_prompt([a, b], {a.id: 0.4, b.id: 0.5}) is b
    assert best_prompt([a, b], {}) is None


def make_three():
    population = Population()
    ratings = RatingSystem()
    a = population.create(
        ["Think before answering.", "Answer briefly."], step=0, rating=ratings.env.create_rating(30.0, 2.0)
    )
    b = population.create(["Search twice before answering."], step=0, rating=ratings.env.create_rating(26.0, 4.0))
    c = population.create(["Guess quickly."], step=0, rating=ratings.env.create_rating(20.0, 5.0))
    rollouts = (
        rollouts_for(a.id, {"t1": [1, 1], "t2": [0, 0], "t3": [1, 0], "t4": [1, 1]})
        + rollouts_for(b.id, {"t1": [0, 0], "t2": [1, 0], "t3": [1, 0], "t4": [0, 0]})
        + rollouts_for(c.id, {"t1": [0, 0], "t2": [0, 0], "t3": [1, 0], "t4": [0, 1]})
    )
    return population, ratings, (a, b, c), rollouts


EDITS = fenced(
    json.dumps(
        [
            {
                "op": "add",
                "principle": "Search twice when the first results disagree.",
                "evidence": "Set B won task t2.",
            },
            {"op": "modify", "index": 1, "principle": "Answer with the entity name only.", "evidence": "B on t2"},
            {"op": "remove", "index": 0},  # no evidence: dropped
        ]
    )
)


def test_crossover_shows_the_winners_and_applies_evidenced_edits():
    population, ratings, (a, b, c), rollouts = make_three()
    engine = ScriptedEngine([constant(EDITS)])
    reflector = Reflector(engine)
    result = crossover([a, b, c], rollouts, reflector, step=9, new_id=population.new_id, ratings=ratings)

    assert len(engine.calls) == 1 and len(engine.calls[0][0]) == 1
    text = engine.user_texts(0)[0]
    assert "G0: Think before answering." in text.split("### Set A")[1].split("### Set B")[0]
    assert "### Set B\nG0: Search twice before answering." in text
    assert "Question t2?\n(reference answer: gold-t2)" in text
    assert "Guess quickly." not in text  # c won nothing (t3 is a three-way tie)
    assert "Question t1?" not in text  # a's own wins are not listed

    child = result.child
    assert child is not None, result.reason
    assert child.principles == ("Think before answering.", "Answer with the entity name only.",
                                "Search twice when the first results disagree.")
    assert child.parents == (a.id, b.id) and child.operator == CROSSOVER_OPERATOR and child.created_step == 9
    assert result.trace["winners"] == {"t1": a.id, "t2": b.id, "t4": a.id}
    assert any("missing evidence" in note for note in result.notes)
    assert child.metadata["won"] == {b.id: ["t2"]}

    precision = 1 / 2.0**2 + 1 / 4.0**2
    assert child.mu == pytest.approx((30.0 / 4.0 + 26.0 / 16.0) / precision)
    assert child.sigma == pytest.approx(math.sqrt(1 / precision + 1.0))
    population.add(child)
    assert set(population.ancestors(child.id)) == {a.id, b.id}
    assert result.usage.calls == 1 and result.usage.batches == 1


def test_given_scores_choose_set_a():
    population, ratings, (a, b, c), rollouts = make_three()
    engine = ScriptedEngine([constant(fenced('[{"op": "add", "principle": "New rule.", "evidence": "A on t1"}]'))])
    scores = {a.id: 0.1, b.id: 0.9, c.id: 0.2}
    result = crossover([a, b, c], rollouts, Reflector(engine), step=1, new_id="x", scores=scores)
    assert result.child is not None
    assert result.child.parents == (b.id, a.id)
    assert result.child.principles == ("Search twice before answering.", "New rule.")


def test_no_other_winner_means_no_call():
    population, ratings, (a, b, c), _ = make_three()
    rollouts = rollouts_for(a.id, {"t1": [1]}) + rollouts_for(b.id, {"t1": [0]}) + rollouts_for(c.id, {"t1": [1]})
    engine = ScriptedEngine([])
    result = crossover([a, b, c], rollouts, Reflector(engine), step=1, new_id="x")
    assert result.child is None and "no other prompt" in result.reason
    assert engine.calls == []


@pytest.mark.parametrize(
    "reply, reason",
    [
        ("garbage", "unreadable"),
        (fenced('[{"op": "add", "principle": "No evidence here."}]'), "no valid edit"),
        (fenced('[{"op": "merge", "indices": [0, 1], "principle": "x y", "evidence": "e"}]'), "no valid edit"),
        (fenced('[{"op": "remove", "index": 0, "evidence": "B"}, {"op": "remove", "index": 1, "evidence": "B"}]'),
         "no principle"),
    ],
)
def test_unusable_crossover_replies(reply, reason):
    _, _, prompts, rollouts = make_three()
    result = crossover(list(prompts), rollouts, Reflector(ScriptedEngine([constant(reply)])), step=1, new_id="x")
    assert result.child is None and reason in result.reason


def test_evidence_can_be_made_optional():
    _, _, prompts, rollouts = make_three()
    engine = ScriptedEngine([constant(fenced('[{"op": "remove", "index": 0}]'))])
    result = crossover(list(prompts), rollouts, Reflector(engine), step=1, new_id="x",
                       config=CrossoverConfig(require_evidence=False))
    assert result.child is not None and result.child.principles == ("Answer briefly.",)


def test_duplicate_selections_collapse():
    _, _, (a, b, c), rollouts = make_three()
    engine = ScriptedEngine([constant(EDITS)])
    result = crossover([a, b, a, c, b], rollouts, Reflector(engine), step=1, new_id="x")
    assert result.child is not None and result.child.parents == (a.id, b.id)
