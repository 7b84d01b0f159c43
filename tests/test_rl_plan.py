"""The trainer settings a run's plan resolves: Dr. GRPO's constant normaliser, the update
schedule and the EMA anchor's kind, each taking effect or refused by name."""

from __future__ import annotations

import pytest

from espl.config import ConfigError, load_config
from espl.run.plan import plan_run


def _trainer(*overrides: str):
    return plan_run(load_config("smoke", ['method="rl"', 'env.name="gsm8k"', *overrides])).trainer


def test_dr_grpo_divides_by_the_generation_budget_not_the_longest_sequence() -> None:
    assert _trainer('rl.loss="dr_grpo"', "policy.max_tokens=48").norm_tokens == 48
    assert _trainer('rl.loss="dr_grpo"', "rl.norm_tokens=100").norm_tokens == 100
    assert _trainer('rl.loss="grpo"').norm_tokens is None  # no other aggregation reads it
    assert _trainer('rl.loss="grpo"', 'rl.loss_options={aggregation="seq_mean_token_sum_norm"}').norm_tokens == 32


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["rl.mini_batches=0"], "rl.mini_batches"),
        (["rl.epochs=0"], "rl.epochs"),
        (["rl.tis_cap=3.0"], "rl.tis_cap"),
        (['rl.old_logprobs="recompute"', "rl.tis_cap=0.5"], "rl.tis_cap"),
        (['rl.kl.anchor="exact"'], "rl.kl.anchor"),
        (['rl.kl.ema_period_unit="batch"'], "rl.kl.ema_period_unit"),
    ],
)
def test_settings_that_cannot_take_effect_are_refused_by_name(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _trainer(*overrides)


def test_the_update_schedule_and_the_anchor_reach_the_trainer() -> None:
    trainer = _trainer('rl.loss="ema_pg"', 'rl.kl.kind="topk"', 'rl.kl.anchor="exact"', "rl.mini_batches=4",
                       "rl.epochs=2", 'rl.old_logprobs="recompute"', "rl.tis_cap=3.0")
    assert (trainer.mini_batches, trainer.epochs, trainer.old_logprobs, trainer.tis_cap) == (4, 2, "recompute", 3.0)
    assert trainer.kl.anchor == "exact"


def test_the_ema_pg_search_preset_has_the_papers_settings() -> None:
    config = load_config("ema_pg_search", ['method="rl"'])
    rl = config.rl
    assert (rl.loss, rl.kl.kind, rl.kl.topk, rl.kl.ema_eta, rl.kl.ema_period, rl.kl.coef) == ("ema_pg", "topk", 32, 0.9, 10, 0.001)
    assert rl.loss_options == {"clip_low": 0.2, "clip_high": 0.28} and tuple(rl.betas) == (0.9, 0.95)
    assert rl.mini_batches * rl.epochs > 1
    for method in ("rl", "espl"):
        plan_run(load_config("ema_pg_search", [f'method="{method}"']))
