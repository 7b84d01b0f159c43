"""Where the code follows E-SPL's paper and reference code: reflector budgets, the reference's
ways of planning, crossing over, adding children and scoring, and the `paper` preset.

(Groups keyed by slot: `test_rl_groups.py`; a plain OpenAI-compatible reflector:
`test_reflector_plain_server.py`.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_operators_support import ScriptedEngine, constant, fenced, trajectory

from agents.engine import SamplingParams
from espl.config import load_config
from espl.evolution.evolver import Evolver, ScheduledOperator
from espl.evolution.operators import CrossoverConfig, MutationConfig, Proposal, build_child, crossover, mutate
from espl.evolution.population import Population
from espl.evolution.reflector import Reflector, ReflectorUsage
from espl.evolution.scores import prompt_scores
from espl.evolution.system_prompt import PromptLimits
from espl.run.plan import plan_run


def mixed_rollouts(prompt_id: str = "p0000") -> list:
    return [trajectory("t1", 1.0, prompt_id), trajectory("t1", 0.0, prompt_id, reply="It is 5.")]


# -- item 4: reflector budgets -------------------------------------------------------------------


def test_every_stage_budget_is_capped_by_the_reflectors_own_limit() -> None:
    engine = ScriptedEngine([constant("a summary")])
    reflector = Reflector(engine, SamplingParams(max_tokens=50, logprobs=False))
    reflector.ask_many([[{"role": "user", "content": "x"}]], max_tokens=200)
    assert engine.calls[0][1].max_tokens == 50, "a stage may not generate past the limit GEPA's reflection has"


def test_stage_budgets_are_run_settings() -> None:
    config = load_config("smoke", ['evolution.operator_options={mutation={summary_tokens=99, critique_tokens=77, '
                                   'plan_tokens=55}, crossover={reply_tokens=33}}'])
    mutation, crossover_spec = plan_run(config).operators
    assert (mutation.options["summary_tokens"], mutation.options["critique_tokens"], mutation.options["plan_tokens"]) == (99, 77, 55)
    assert crossover_spec.options["reply_tokens"] == 33


def test_a_critique_may_reason_before_its_edit_list_and_the_last_list_counts() -> None:
    reasoned = ('Both failures forgot the units. An example of a bad edit: ```json\n[{"op": "remove", "index": 0}]\n```\n'
                'My edits:\n' + fenced(json.dumps([{"op": "add", "principle": "State the units of the answer."}])))
    plan = fenced(json.dumps([{"op": "add", "principle": "State the units of the answer."}]))
    engine = ScriptedEngine([constant("summary"), constant(reasoned), constant(plan)])
    config = MutationConfig(verbatim_words=0, reason_first=True, critique_tokens=900)
    parent = Population().create(["Read the question."], step=0)
    result = mutate(parent, mixed_rollouts(), Reflector(engine), step=1, new_id="p0001", config=config)
    assert result.child is not None and result.child.principles[-1] == "State the units of the answer."
    assert "First say in a few sentences" in engine.user_texts(1)[0]
    assert engine.calls[1][1].max_tokens == 512, "with reasoning first the critique keeps its whole budget (the reflector's 512)"


# -- item 6: the reference code's ways ---------------------------------------------------------------


def test_reference_plan_mode_applies_additions_directly_and_plans_the_modifications() -> None:
    critique = fenced(json.dumps([{"op": "add", "principle": "Check the units."},
                                  {"op": "modify", "index": 0, "principle": "Read the whole question."}]))
    plan = fenced(json.dumps([{"op": "modify", "index": 0, "principle": "Read the whole question twice."}]))
    engine = ScriptedEngine([constant("summary"), constant(critique), constant(plan)])
    config = MutationConfig(verbatim_words=0, plan_mode="reference")
    parent = Population().create(["Read the question."], step=0)
    result = mutate(parent, mixed_rollouts(), Reflector(engine), step=1, new_id="p0001", config=config)
    assert result.child.principles == ("Read the whole question twice.", "Check the units.")
    plan_prompt = engine.user_texts(2)[0]
    assert "modify G0: Read the whole question." in plan_prompt and "Check the units" not in plan_prompt


def test_reference_plan_mode_needs_no_plan_call_for_additions_alone() -> None:
    critique = fenced(json.dumps([{"op": "add", "principle": "Check the units."}]))
    engine = ScriptedEngine([constant("summary"), constant(critique)])
    parent = Population().create(["Read the question."], step=0)
    result = mutate(parent, mixed_rollouts(), Reflector(engine), step=1, new_id="p0001",
                    config=MutationConfig(verbatim_words=0, plan_mode="reference"))
    assert result.child.principles == ("Read the question.", "Check the units.") and len(engine.calls) == 2


def test_crossover_as_the_reference_shows_it_no_gold_answers_and_set_as_own_wins() -> None:
    population = Population()
    a = population.create(["Rule a."], step=0)
    b = population.create(["Rule b."], step=0)
    rollouts = [trajectory("t1", 1.0, a.id, gold="41"), trajectory("t1", 0.0, b.id, gold="41"),
                trajectory("t2", 0.0, a.id, gold="42"), trajectory("t2", 1.0, b.id, gold="42"),
                trajectory("t3", 1.0, a.id, gold="43"), trajectory("t3", 0.0, b.id, gold="43")]
    reply = fenced(json.dumps([{"op": "add", "principle": "Borrow rule b.", "evidence": "set B, t2"}]))
    for config, gold_shown, wins_shown in ((CrossoverConfig(), True, False),
                                           (CrossoverConfig(show_gold=False, show_best_wins=True), False, True)):
        engine = ScriptedEngine([constant(reply)])
        crossover([a, b], rollouts, Reflector(engine), step=1, new_id="p0009", config=config)
        text = engine.user_texts(0)[0]
        assert ("reference answer" in text) is gold_shown
        assert ("Tasks where set A was best" in text and "t1" in text) is wins_shown


class FixedChild:
    """An operator that always proposes the same addition (to watch the order children join)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def propose(self, context):
        parent = context.best
        child, reason = build_child([*parent.principles, f"From {self.name}."], parents=[parent], operator=self.name,
                                    step=context.step, new_id=context.new_id, limits=PromptLimits())
        return Proposal(child, reason, ReflectorUsage())

    def child_rating(self, parents, ratings):
        return None


@pytest.mark.parametrize(("order", "newest"), [((), "From crossover."), (("crossover", "mutation"), "From mutation.")])
def test_children_join_in_the_configured_order(order: tuple[str, ...], newest: str) -> None:
    population = Population()
    seed = population.create(["Seed."], step=0)
    evolver = Evolver(population, Reflector(ScriptedEngine([])),
                      [ScheduledOperator(FixedChild("mutation")), ScheduledOperator(FixedChild("crossover"))],
                      children_order=order)
    rollouts = mixed_rollouts(seed.id)
    evolver.start(1, [seed.id], rollouts, [0, 0], np.random.default_rng(0), seed=1)()
    assert population.newest.principles[-1] == newest
    assert sorted(population.member_ids) == ["p0000", "p0001", "p0002"]


def test_a_prompt_drawn_twice_scores_its_best_slot_as_the_reference_does() -> None:
    rollouts = [trajectory("t", 0.0, "a"), trajectory("t", 0.0, "a"), trajectory("t", 1.0, "a"), trajectory("t", 0.0, "a")]
    slots = [0, 0, 1, 1]
    assert prompt_scores(rollouts, slots, "mean") == {"a": 0.25}
    assert prompt_scores(rollouts, slots, "max") == {"a": 0.5}


# -- item 7: the paper preset -------------------------------------------------------------------------


def test_the_paper_preset_follows_the_reference() -> None:
    config = load_config("paper")
    evolution = config.evolution
    assert evolution.verbatim_words == 0 and evolution.initial_principles == []  # every rollout summarised; empty root
    assert (config.policy.temperature, config.policy.top_p, config.eval_temperature) == (0.6, 0.95, 0.6)
    assert (config.eval_every, config.eval_samples, evolution.eval_prompt) == (1, 10, "newest")
    assert evolution.selection == "lucb" and config.rl.grad_clip == 0.0
    assert evolution.children_order == ["crossover", "mutation"] and evolution.duplicate_scores == "max"
    mutation, crossover_spec = plan_run(config).operators
    assert mutation.options["reason_first"] and mutation.options["plan_mode"] == "reference"
    assert mutation.options["critique_tokens"] == config.policy.max_tokens == evolution.reflector.max_tokens
    assert crossover_spec.options["show_gold"] is False and crossover_spec.options["show_best_wins"] is True
    assert crossover_spec.options["require_best_wins"] is True and crossover_spec.options["win_margin"] == 0.01


def test_an_empty_root_prompt_is_an_empty_system_prompt(tmp_path) -> None:
    from espl.run.run_dir import RunDir
    from espl.run.train import run_training

    config = load_config("smoke", ['method="base"', 'policy.model="tiny-random"', 'env.name="arithmetic"',
                                   "evolution.initial_principles=[]"])
    summary = run_training(config, RunDir(tmp_path / "run"))
    assert summary["eval_prompt"]["principles"] == []
    first = json.loads((tmp_path / "run" / "rollouts.jsonl").read_text().splitlines()[0])
    assert first["system_prompt"] == ""


def test_the_references_crossover_needs_a_win_of_set_a_and_a_margin() -> None:
    population = Population()
    a = population.create(["Rule a."], step=0)
    b = population.create(["Rule b."], step=0)
    only_b_wins = [trajectory("t1", 0.0, a.id), trajectory("t1", 1.0, b.id),
                   trajectory("t2", 1.0, a.id), trajectory("t2", 1.0, b.id)]
    reply = fenced(json.dumps([{"op": "add", "principle": "Borrow rule b.", "evidence": "set B, t1"}]))
    scores = {a.id: 0.6, b.id: 0.5}
    engine = ScriptedEngine([constant(reply)])
    result = crossover([a, b], only_b_wins, Reflector(engine), step=1, new_id="p0009", scores=scores,
                       config=CrossoverConfig(require_best_wins=True))
    assert result.child is None and "won no problem" in result.reason and not engine.calls
    near = [trajectory(f"t{i}", r, pid) for i, (ra, rb) in enumerate([(0.5, 0.505), (1.0, 0.0)])
            for pid, r in ((a.id, ra), (b.id, rb))]
    from espl.evolution.operators import strict_winners

    assert strict_winners(near, [a.id, b.id]) == {"t0": b.id, "t1": a.id}
    assert strict_winners(near, [a.id, b.id], margin=0.01) == {"t1": a.id}  # 0.005 apart is a tie


def test_the_references_softmax_temperature_is_the_largest_score() -> None:
    from espl.evolution.selection import make_strategy
    from espl.evolution.system_prompt import RatingPoint

    window = [f"p{i}" for i in range(6)]
    ratings = {pid: RatingPoint(0, 25.0 + 3 * i, 2.0) for i, pid in enumerate(window)}
    draws = {"sharp": [], "reference": []}
    for label, strategy in (("sharp", make_strategy("softmax")),
                            ("reference", make_strategy("softmax", reference_temperature=True))):
        rng = np.random.default_rng(0)
        draws[label] = [strategy.select(window, ratings, 2, rng)[1] for _ in range(400)]
    assert draws["sharp"].count("p4") > 2 * draws["reference"].count("p4")  # T = 46: nearly uniform
    assert len(set(draws["reference"])) == 5


def test_grad_clip_zero_is_no_clipping() -> None:
    """The reference clips nothing; `rl.grad_clip = 0` means the same (it used to zero every step)."""
    import copy

    from test_rl_trainer import SMALL_LORA, _trajectories

    from agents import models
    from espl.rl.lora import POLICY, adapter_tensors
    from espl.rl.settings import TrainerConfig
    from espl.rl.trainer import LoRATrainer

    base = models.load_model("tiny-random")
    trajectories, keys = _trajectories(8)
    trainer = LoRATrainer(copy.deepcopy(base), TrainerConfig(lr=1e-2, grad_clip=0.0, lora=SMALL_LORA))
    before = {k: v.detach().clone() for k, v in adapter_tensors(trainer.model, POLICY).items()}
    stats = trainer.step(trajectories, keys)
    after = adapter_tensors(trainer.model, POLICY)
    assert stats["grad_norm"] > 1e-3, "the norm is still measured and reported"
    assert sum(float((after[k] - before[k]).abs().sum()) for k in before) > 0.0, "the step moved the adapter"
