"""Several optimizer steps per batch of rollouts: mini-batches, update epochs, fixed old
logprobs, and the EMA period P counted in optimizer steps (EMA-PG's search setting).

E-SPL's default stays one optimizer step per batch; the golden runs hold its numbers.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path

import pytest
import torch

from agents import models
from agents.trajectory import Trajectory
from espl.rl.checkpoint import load_checkpoint, save_checkpoint
from espl.rl.lora import ANCHOR, adapter_tensors
from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

SMALL_LORA = LoraSettings(rank=4, alpha=8)
TODAYS_STATS = {"reward_mean", "sequences", "loss", "pg_loss", "ratio_mean", "ratio_max", "ratio_min", "approx_kl",
                "advantage_mean", "num_tokens", "grad_norm", "step", "tokens", "update_s"}
"""The keys of a default (one-step, no anchor) update: the golden records hold exactly these."""


@pytest.fixture(scope="module")
def base_model():
    return models.load_model("tiny-random")


def _batch(n: int = 8, seed: int = 0, *, on_policy_of: LoRATrainer | None = None) -> tuple[list[Trajectory], list]:
    """Synthetic episodes in groups of 4 with mixed rewards; with `on_policy_of`, their sampling
    logprobs are that trainer's own (as the `hf` engine would return them)."""
    rng = random.Random(seed)
    out, keys = [], []
    for i in range(n):
        t = Trajectory("synthetic", f"task{i // 4}", "p0", i % 4)
        t.append_prompt([rng.randrange(100, 5000) for _ in range(rng.randrange(5, 12))])
        first = [rng.randrange(100, 5000) for _ in range(rng.randrange(2, 9))]
        t.append_sampled(first, [-rng.random() * 3 for _ in first])
        t.append_env([rng.randrange(100, 5000) for _ in range(3)])
        second = [rng.randrange(100, 5000) for _ in range(rng.randrange(1, 6))]
        t.append_sampled(second, [-rng.random() * 3 for _ in second])
        t.reward = float(i % 2)  # every group of 4 is mixed
        out.append(t)
        keys.append(("p0", t.task_id))
    if on_policy_of is not None:
        _set_on_policy(on_policy_of, out)
    return out, keys


def _set_on_policy(trainer: LoRATrainer, trajectories: list[Trajectory]) -> None:
    with torch.no_grad():
        for t in trajectories:
            ids = torch.tensor([t.token_ids])
            logprobs = torch.log_softmax(trainer.model(ids).logits.float(), -1)[0, :-1].gather(-1, ids[0, 1:, None])[:, 0]
            t.logprobs = [0.0] + [float(x) if m else 0.0 for x, m in zip(logprobs, t.loss_mask[1:])]


def _trainer(base_model, **settings) -> LoRATrainer:
    torch.manual_seed(0)
    settings.setdefault("lora", SMALL_LORA)
    return LoRATrainer(copy.deepcopy(base_model), TrainerConfig(**settings), seed=0)


def _count_optimizer_steps(trainer: LoRATrainer) -> list[int]:
    calls: list[int] = []
    step = trainer.optimizer.step

    def counted(*args, **kwargs):
        calls.append(1)
        return step(*args, **kwargs)

    trainer.optimizer.step = counted  # type: ignore[method-assign]
    return calls


def _anchor(trainer: LoRATrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter_tensors(trainer.model, ANCHOR).items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# -- the default stays one step ---------------------------------------------------------------


def test_the_default_takes_one_optimizer_step_and_reports_todays_stats(base_model) -> None:
    trainer = _trainer(base_model)
    calls = _count_optimizer_steps(trainer)
    stats = trainer.step(*_batch())
    assert len(calls) == 1 and set(stats) == TODAYS_STATS
    assert trainer.optimizer_steps == 1


# -- several steps per batch ------------------------------------------------------------------


def test_two_epochs_of_two_mini_batches_take_four_steps_and_the_ppo_clip_acts(base_model) -> None:
    trainer = _trainer(base_model, loss="grpo", lr=5e-2, epochs=2, mini_batches=2)
    batch = _batch(8, on_policy_of=trainer)
    calls = _count_optimizer_steps(trainer)
    stats = trainer.step(*batch)
    assert len(calls) == 4 and stats["optimizer_steps"] == 4.0 and trainer.optimizer_steps == 4
    assert stats["clip_fraction"] > 0.0, stats  # the ratio left [0.8, 1.28] after the first steps
    assert stats["num_tokens"] == stats["tokens"]  # a batch's tokens, not summed over epochs
    # One epoch on the whole batch is one step, and on-policy its ratio is 1: nothing clips.
    single = _trainer(base_model, loss="grpo", lr=5e-2)
    one = single.step(*_batch(8, on_policy_of=single))
    assert one["clip_fraction"] == 0.0 and abs(one["ratio_max"] - 1.0) < 1e-4


def test_the_kl_importance_weight_leaves_one_after_the_first_step(base_model) -> None:
    kl = KLSettings(kind="topk", topk=8, ema_period=1)
    trainer = _trainer(base_model, loss="ema_pg", lr=5e-2, kl=kl, epochs=2, mini_batches=2)
    stats = trainer.step(*_batch(8, on_policy_of=trainer))
    assert stats["optimizer_steps"] == 4.0
    assert stats["kl_is_weight_min"] <= stats["kl_is_weight_mean"] <= stats["kl_is_weight_max"]
    assert max(stats["kl_is_weight_max"] - 1.0, 1.0 - stats["kl_is_weight_min"]) > 0.05, stats
    # It is the policy-to-old ratio the PPO term uses (both against the same old logprobs).
    assert stats["kl_is_weight_max"] == pytest.approx(stats["ratio_max"], rel=1e-4)


def test_old_logprobs_are_fixed_before_the_first_step(base_model) -> None:
    """`recompute`: the trainer's own logprobs before the first step are the denominator (ratio
    1 there, even when the engine's logprobs are far off), kept for every later step; the
    engine's logprobs enter as a truncated importance weight."""
    engine_off = _batch(8)  # sampling logprobs that are not this model's
    frozen = _trainer(base_model, loss="grpo", lr=0.0, old_logprobs="recompute", mini_batches=2)
    stats = frozen.step(*engine_off)
    assert abs(stats["ratio_max"] - 1.0) < 1e-4 and abs(stats["ratio_min"] - 1.0) < 1e-4
    assert stats["tis_weight_max"] <= 2.0 and stats["tis_weight_min"] < 0.9  # min(pi_old / pi_engine, 2)
    engine = _trainer(base_model, loss="grpo", lr=0.0, mini_batches=2).step(*engine_off)
    assert engine["ratio_max"] < 1e-2 and "tis_weight_mean" not in engine  # pi / pi_engine, far from 1

    moving = _trainer(base_model, loss="grpo", lr=5e-2, old_logprobs="recompute", epochs=3)
    stats = moving.step(*engine_off)
    assert stats["ratio_max"] > 1.01 or stats["ratio_min"] < 0.99  # not recomputed between steps


def test_mini_batches_are_shuffled_from_the_seed(base_model) -> None:
    def run(seed: int) -> dict[str, float]:
        torch.manual_seed(0)
        config = TrainerConfig(loss="grpo", lr=5e-2, mini_batches=3, lora=SMALL_LORA)
        trainer = LoRATrainer(copy.deepcopy(base_model), config, seed=seed)
        return trainer.step(*_batch(12))

    first, again, other = run(0), run(0), run(1)
    assert {k: v for k, v in first.items() if k != "update_s"} == {k: v for k, v in again.items() if k != "update_s"}
    assert first["loss"] != other["loss"]


# -- the EMA period counts optimizer steps ----------------------------------------------------


def test_the_ema_period_counts_mini_batch_steps(base_model) -> None:
    kl = KLSettings(kind="topk", topk=8, ema_period=2, ema_eta=0.5)
    trainer = _trainer(base_model, loss="ema_pg", lr=1e-2, kl=kl, mini_batches=2)
    before = _anchor(trainer)
    stats = trainer.step(*_batch(8))
    assert trainer.optimizer_steps == 2 and stats["anchor_updates"] == 1.0
    assert not _same(before, _anchor(trainer))


def test_an_ema_update_due_on_a_skipped_batch_is_not_lost(base_model) -> None:
    """A batch whose groups were all dropped takes no optimizer step, so it does not count
    toward P: the update that fell due on it by batch count comes after the next real step."""
    kl = KLSettings(kind="topk", topk=8, ema_period=2, ema_eta=0.5)
    trainer = _trainer(base_model, loss="ema_pg", lr=1e-2, kl=kl, advantage_mode="espl")  # drops all-equal groups
    trainer.step(*_batch(8, seed=1))
    before = _anchor(trainer)
    solved, keys = _batch(8, seed=2)
    for t in solved:
        t.reward = 1.0
    skipped = trainer.step(solved, keys)
    assert skipped["skipped"] == 1.0 and trainer.optimizer_steps == 1 and _same(before, _anchor(trainer))
    stats = trainer.step(*_batch(8, seed=3))
    assert trainer.optimizer_steps == 2 and stats["anchor_updates"] == 1.0
    assert not _same(before, _anchor(trainer))


def test_the_ema_period_may_count_batches_as_the_reference_code_does(base_model) -> None:
    """`ema_period_unit="batch"`: P counts batches that took a step (verl's global steps), however
    many mini-batch steps each took."""
    kl = KLSettings(kind="topk", topk=8, ema_period=2, ema_eta=0.5, ema_period_unit="batch")
    trainer = _trainer(base_model, loss="ema_pg", lr=1e-2, kl=kl, mini_batches=2, advantage_mode="espl")
    before = _anchor(trainer)
    assert trainer.step(*_batch(8, seed=1))["anchor_updates"] == 0.0 and _same(before, _anchor(trainer))
    solved, keys = _batch(8, seed=2)
    for t in solved:
        t.reward = 0.0
    assert trainer.step(solved, keys)["anchor_updates"] == 0.0  # skipped: not a batch that counts
    stats = trainer.step(*_batch(8, seed=3))
    assert (trainer.optimizer_steps, trainer.trained_batches, stats["anchor_updates"]) == (4, 2, 1.0)
    assert not _same(before, _anchor(trainer))


def test_resume_with_mini_batches_reproduces_the_next_step(base_model, tmp_path: Path) -> None:
    kl = KLSettings(kind="topk", topk=8, ema_period=3)
    settings = dict(loss="ema_pg", lr=5e-3, kl=kl, mini_batches=2, old_logprobs="recompute")
    batches = [_batch(8, seed=s) for s in range(3)]
    straight = _trainer(base_model, **settings)
    straight.step(*batches[0])
    straight.step(*batches[1])
    expected = straight.step(*batches[2])

    first = _trainer(base_model, **settings)
    first.step(*batches[0])
    first.step(*batches[1])
    save_checkpoint(first, tmp_path / "ckpt")
    torch.manual_seed(123)
    resumed = LoRATrainer(copy.deepcopy(base_model), TrainerConfig(lora=SMALL_LORA, **settings), seed=0)
    load_checkpoint(resumed, tmp_path / "ckpt")
    assert (resumed.step_count, resumed.optimizer_steps) == (2, 4)
    got = resumed.step(*batches[2])
    for key in ("loss", "pg_loss", "kl_mean", "grad_norm", "anchor_updates"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-8), key
    for name, tensor in adapter_tensors(straight.model, ANCHOR).items():
        torch.testing.assert_close(adapter_tensors(resumed.model, ANCHOR)[name], tensor)


def test_settings_out_of_range_are_refused(base_model) -> None:
    for bad in (dict(mini_batches=0), dict(epochs=0), dict(old_logprobs="sampler"), dict(tis_cap=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _trainer(base_model, **bad)


# -- through a run ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_with_two_epochs_logs_the_steps_the_clip_and_the_kl_weight(tmp_path: Path) -> None:
    from golden_runs import COIN_SETTINGS, install

    from espl.config import load_config
    from espl.run.run_dir import RunDir
    from espl.run.train import run_training

    install()
    settings = {**COIN_SETTINGS, "iterations": 2, "eval_every": 0, "method": "rl", "policy.model": "tiny-random",
                "env.name": "coin", "rl.loss": "ema_pg", "rl.kl.kind": "topk", "rl.kl.topk": 8, "rl.lr": 5e-2,
                "rl.epochs": 2, "rl.mini_batches": 2}
    config = load_config("smoke", [f"{key}={json.dumps(value)}" for key, value in settings.items()])
    run_training(config, RunDir(tmp_path / "run"))
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = [line["train"] for line in lines if line.get("train") and not line["train"].get("skipped")]
    assert trained, lines
    assert all(train["optimizer_steps"] == 4.0 for train in trained)
    assert any(train["clip_fraction"] > 0.0 for train in trained), trained
    assert any(abs(train["kl_is_weight_max"] - 1.0) > 1e-3 or abs(train["kl_is_weight_min"] - 1.0) > 1e-3
               for train in trained), trained
