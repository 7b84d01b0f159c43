"""`env.partial_credit`: training envs that have a graded reward use it; evaluation never does."""

from __future__ import annotations

import pytest

from espl.config import ConfigError, load_config
from espl.run.builder import env_factory
from espl.run.plan import plan_run


def _plan(*overrides: str):
    return plan_run(load_config("smoke", ['method="rl"', *overrides]))


def test_training_envs_give_partial_credit_and_evaluation_envs_do_not() -> None:
    plan = _plan('env.name="hotpotqa"', "env.partial_credit=true")
    assert plan.partial_credit == "the answer's token F1 against the best gold answer"
    train_env = env_factory(plan, plan.splits[0], training=True)()
    eval_env = env_factory(plan, plan.splits[1])()
    assert train_env.unwrapped.graded is True
    assert eval_env.unwrapped.graded is False


def test_off_by_default_and_a_no_op_on_envs_with_only_right_or_wrong() -> None:
    plan = _plan('env.name="hotpotqa"')
    assert plan.partial_credit is None
    assert env_factory(plan, plan.splits[0], training=True)().unwrapped.graded is False
    assert _plan('env.name="gsm8k"', "env.partial_credit=true").partial_credit is None


def test_partial_credit_through_env_kwargs_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"env\.partial_credit"):
        _plan('env.name="hotpotqa"', "env.partial_credit=true", "env.kwargs={partial_credit=false}")


def test_the_cpu_preset_asks_for_it_and_the_paper_presets_do_not() -> None:
    assert load_config("default", []).env.partial_credit is True
    assert load_config("paper", []).env.partial_credit is False
