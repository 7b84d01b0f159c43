"""EMA-PG's anchor on a LoRA policy: the exact weight-space EMA of each layer's delta B·A,
next to the cheap EMA of the factors (EMA(B)·EMA(A) != EMA(B·A))."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch

from agents import models
from agents.trajectory import Trajectory
from espl.rl.anchor import ExactAnchor, FactorAnchor, make_anchor
from espl.rl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors, attach_lora
from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

SMALL_LORA = LoraSettings(rank=4, alpha=8)
IDS = torch.tensor([[5, 60, 700, 8000, 9, 10, 11]])


@pytest.fixture(scope="module")
def base_model():
    return models.load_model("tiny-random")


def _lora_layers(model) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in model.named_modules() if hasattr(module, "lora_A") and POLICY in module.lora_A}


def _randomise_policy(model, generator: torch.Generator) -> None:
    with torch.no_grad():
        for tensor in adapter_tensors(model, POLICY).values():
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)


def _deltas(model) -> dict[str, torch.Tensor]:
    return {name: module.get_delta_weight(POLICY).detach().float().clone() for name, module in _lora_layers(model).items()}


def _merged_logits(base_model, deltas: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the base model with `deltas` added to its weights (what the anchor should be)."""
    model = copy.deepcopy(base_model)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name.removeprefix("base_model.model.")].weight += delta
        return model(IDS).logits


def test_the_exact_anchor_is_the_ema_of_the_deltas_and_runs_as_merged_weights(base_model) -> None:
    model = attach_lora(copy.deepcopy(base_model), SMALL_LORA)
    anchor = ExactAnchor(model)
    generator = torch.Generator().manual_seed(0)
    expected = _deltas(model)  # the anchor starts at the policy
    for eta in (0.5, 0.8, 0.3):
        _randomise_policy(model, generator)
        anchor.update(eta)
        expected = {k: eta * v + (1 - eta) * d for (k, v), d in zip(expected.items(), _deltas(model).values())}
    assert anchor.deltas.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(anchor.deltas[name], expected[name], rtol=1e-5, atol=1e-7)
    with torch.no_grad(), anchor.active():
        logits = model(IDS).logits
    torch.testing.assert_close(logits, _merged_logits(base_model, expected), rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # outside the context the policy runs again, hooks gone
        torch.testing.assert_close(model(IDS).logits, _merged_logits(base_model, _deltas(model)), rtol=1e-4, atol=1e-4)


def test_the_factor_anchor_is_not_the_ema_of_the_weights(base_model) -> None:
    model = attach_lora(copy.deepcopy(base_model), SMALL_LORA, with_anchor=True)
    exact, factors = ExactAnchor(model), FactorAnchor(model)
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):
        _randomise_policy(model, generator)
        exact.update(0.5)
        factors.update(0.5)
    layers = _lora_layers(model)
    gap = sum(float((exact.deltas[n] - m.get_delta_weight(ANCHOR).float()).norm() ** 2) for n, m in layers.items())
    size = sum(float(d.norm() ** 2) for d in exact.deltas.values())
    assert (gap / size) ** 0.5 > 0.05
    assert exact.nbytes() == sum(4 * m.out_features * m.in_features for m in layers.values())
    with torch.no_grad():
        with exact.active():
            exact_logits = model(IDS).logits
        with factors.active():
            factor_logits = model(IDS).logits
    assert not torch.allclose(exact_logits, factor_logits, atol=1e-4)


def _trajectories(n: int = 8) -> tuple[list[Trajectory], list]:
    rng = random.Random(0)
    out, keys = [], []
    for i in range(n):
        t = Trajectory("synthetic", f"task{i // 4}", "p0", i % 4)
        t.append_prompt([rng.randrange(100, 5000) for _ in range(6)])
        sampled = [rng.randrange(100, 5000) for _ in range(5)]
        t.append_sampled(sampled, [-rng.random() * 3 for _ in sampled])
        t.reward = float(i % 2)
        out.append(t)
        keys.append(("p0", t.task_id))
    return out, keys


def test_a_trainer_with_the_exact_anchor_trains_checkpoints_and_resumes(base_model, tmp_path: Path) -> None:
    kl = KLSettings(kind="topk", topk=8, ema_period=1, anchor="exact")
    config = TrainerConfig(loss="ema_pg", lr=1e-2, kl=kl, lora=SMALL_LORA)
    torch.manual_seed(0)
    trainer = LoRATrainer(copy.deepcopy(base_model), config)
    assert ANCHOR not in trainer.model.peft_config  # no second adapter: the deltas are the anchor
    trainer.step(*_trajectories())
    assert any(float(d.abs().max()) > 0 for d in trainer.anchor.deltas.values())
    save_checkpoint(trainer, tmp_path / "ckpt")
    expected = trainer.step(*_trajectories())

    torch.manual_seed(0)
    resumed = LoRATrainer(copy.deepcopy(base_model), config)
    load_checkpoint(resumed, tmp_path / "ckpt")  # torch.load(weights_only=True) reads it
    got = resumed.step(*_trajectories())
    for key in ("loss", "kl_mean", "grad_norm"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-8), key
    for name, delta in trainer.anchor.deltas.items():
        torch.testing.assert_close(resumed.anchor.deltas[name], delta)

    factor_config = TrainerConfig(loss="ema_pg", kl=KLSettings(kind="topk", topk=8, anchor="factors"), lora=SMALL_LORA)
    other = LoRATrainer(copy.deepcopy(base_model), factor_config)
    with pytest.raises(CheckpointError, match="anchor"):
        load_checkpoint(other, tmp_path / "ckpt")


def test_make_anchor_refuses_unknown_kinds(base_model) -> None:
    model = attach_lora(copy.deepcopy(base_model), SMALL_LORA)
    with pytest.raises(ValueError, match="anchor"):
        make_anchor(model, "weights")
