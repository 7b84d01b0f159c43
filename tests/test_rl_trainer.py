"""The LoRA trainer on the tiny random model: exact micro-batching, KL anchors, checkpoints."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from agents import models
from agents.trajectory import Trajectory
from espl.rl.checkpoint import load_checkpoint, save_checkpoint
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors
from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig
from espl.rl.trainer import LoRATrainer

SMALL_LORA = LoraSettings(rank=4, alpha=8)


@pytest.fixture(scope="module")
def base_model():
    return models.load_model("tiny-random")


def _model(base_model):
    return copy.deepcopy(base_model)


def _trajectories(n: int, seed: int = 0) -> tuple[list[Trajectory], list[tuple[str, str]]]:
    """Synthetic episodes: a prompt, sampled tokens with logprobs, an env reply, more sampled tokens."""
    rng = random.Random(seed)
    out, keys = [], []
    for i in range(n):
        t = Trajectory("synthetic", f"task{i // 4}", "p0", i % 4)
        t.append_prompt([rng.randrange(100, 5000) for _ in range(rng.randrange(5, 12))])
        _play(t, rng, shortest_first_turn=2)
        out.append(t)
        keys.append(("p0", t.task_id))
    return out, keys


def _play(t: Trajectory, rng: random.Random, *, shortest_first_turn: int) -> None:
    """After the prompt: sampled tokens with logprobs, an env reply, more sampled tokens, a reward."""
    first = [rng.randrange(100, 5000) for _ in range(rng.randrange(shortest_first_turn, 9))]
    t.append_sampled(first, [-rng.random() * 3 for _ in first])
    t.append_env([rng.randrange(100, 5000) for _ in range(3)])
    second = [rng.randrange(100, 5000) for _ in range(rng.randrange(1, 6))]
    t.append_sampled(second, [-rng.random() * 3 for _ in second])
    t.reward = float(rng.random() < 0.5)


def _grads(trainer: LoRATrainer) -> dict[str, torch.Tensor]:
    return {k: v.grad.clone() for k, v in adapter_tensors(trainer.model, POLICY).items() if v.grad is not None}


@pytest.mark.parametrize("loss", ["reinforce", "grpo", "cispo", "dr_grpo"])
def test_micro_batching_gives_the_full_batch_gradient(base_model, loss: str) -> None:
    trajectories, keys = _trajectories(12)
    grads, stats = [], []
    for micro in (12, 5, 1):
        torch.manual_seed(0)
        config = TrainerConfig(loss=loss, micro_batch_size=micro, lora=SMALL_LORA, lr=0.0, grad_clip=1e9)
        trainer = LoRATrainer(_model(base_model), config)
        with torch.no_grad():  # non-zero B so the gradients of A are non-zero too
            for name, tensor in adapter_tensors(trainer.model, POLICY).items():
                if "lora_B" in name:
                    tensor.normal_(std=0.02)
        stats.append(trainer.step(trajectories, keys))
        grads.append(_grads(trainer))
    # The reported stats do not depend on the micro-batching either (means stay means).
    for key in ("loss", "pg_loss", "ratio_mean", "ratio_max", "ratio_min", "approx_kl", "advantage_mean", "num_tokens"):
        for other in stats[1:]:
            assert other[key] == pytest.approx(stats[0][key], rel=1e-4, abs=1e-6), key
    scale = max(g.abs().max() for g in grads[0].values())
    assert scale > 0
    for other in grads[1:]:
        assert grads[0].keys() == other.keys()
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], other[name], rtol=1e-4, atol=1e-5 * float(scale))


def _grouped_trajectories(groups: int, size: int, seed: int = 0) -> tuple[list[Trajectory], list[tuple[str, str]]]:
    """Groups of `size` multi-turn samples that start with the same prompt, of varied lengths."""
    rng = random.Random(seed)
    out, keys = [], []
    for g in range(groups):
        prompt = [rng.randrange(100, 5000) for _ in range(rng.randrange(4, 20))]
        for k in range(size):
            t = Trajectory("synthetic", f"task{g}", "p0", k)
            t.append_prompt(prompt)
            _play(t, rng, shortest_first_turn=1)
            out.append(t)
            keys.append(("p0", t.task_id))
    return out, keys


@pytest.mark.parametrize(("loss", "kl"), [("grpo", KLSettings()), ("ema_pg", KLSettings(kind="topk", topk=8)),
                                          ("reinforce", KLSettings(kind="k3", coef=0.1))])
def test_a_shared_prompt_prefix_gives_the_same_gradient(base_model, loss: str, kl: KLSettings) -> None:
    trajectories, keys = _grouped_trajectories(groups=3, size=4)
    trajectories.append(_trajectories(1, seed=5)[0][0])  # a sample with a prompt of its own
    keys.append(("p0", "lonely"))
    grads, stats = [], []
    for share, micro in ((False, 13), (True, 13), (True, 3)):  # 3: groups split across micro-batches
        torch.manual_seed(0)
        config = TrainerConfig(loss=loss, kl=kl, micro_batch_size=micro, share_prefix=share, lora=SMALL_LORA,
                               lr=0.0, grad_clip=1e9)
        trainer = LoRATrainer(_model(base_model), config)
        with torch.no_grad():
            for name, tensor in adapter_tensors(trainer.model, POLICY).items():
                if "lora_B" in name:
                    tensor.normal_(std=0.02)
        stats.append(trainer.step(trajectories, keys))
        grads.append(_grads(trainer))
    for key in ("loss", "pg_loss", "num_tokens"):
        for other in stats[1:]:
            assert other[key] == pytest.approx(stats[0][key], rel=1e-4, abs=1e-6), key
    scale = max(g.abs().max() for g in grads[0].values())
    assert scale > 0
    for other in grads[1:]:
        for name in grads[0]:
            torch.testing.assert_close(grads[0][name], other[name], rtol=1e-4, atol=1e-5 * float(scale))


def _recording(trainer: LoRATrainer) -> tuple[dict[int, torch.Tensor], list[bool]]:
    """Spy on the trainer's micro-batches: each row's per-token logprobs as the loss sees them
    (by trajectory index), and whether each micro-batch ran a shared prefix."""
    logprobs: dict[int, torch.Tensor] = {}
    prefixes: list[bool] = []
    micro_loss, loss = trainer._micro_loss, trainer.loss

    def recorded(batch):
        def spy(inputs):
            for r, i in enumerate(batch.rows):
                logprobs[i] = inputs.logprobs[r][inputs.mask[r]].detach().clone()
            return loss(inputs)

        prefixes.append(batch.prefix is not None)
        trainer.loss = spy
        try:
            return micro_loss(batch)
        finally:
            trainer.loss = loss

    trainer._micro_loss = recorded  # type: ignore[method-assign]
    return logprobs, prefixes


@pytest.mark.parametrize(("loss", "kl"), [
    ("grpo", KLSettings()),
    ("reinforce", KLSettings(kind="k3", coef=0.1)),
    ("ema_pg", KLSettings(kind="topk", topk=8, anchor="factors")),
    ("ema_pg", KLSettings(kind="topk", topk=8, anchor="exact")),
], ids=["none", "k3", "topk-factors", "topk-exact"])
def test_gradient_checkpointing_is_exact_with_a_shared_prefix(base_model, loss: str, kl: KLSettings) -> None:
    """Checkpointed layers run without a key/value cache: with `share_prefix` on, the trainer
    must still give the logprobs and gradients of whole sequences run without sharing."""
    trajectories, keys = _grouped_trajectories(groups=2, size=3)
    results = {}
    for share, checkpointing in ((False, False), (True, False), (True, True)):
        config = TrainerConfig(loss=loss, kl=kl, micro_batch_size=6, share_prefix=share, lora=SMALL_LORA,
                               lr=0.0, grad_clip=1e9, gradient_checkpointing=checkpointing)
        trainer = LoRATrainer(_model(base_model), config)
        assert trainer.model.is_gradient_checkpointing == checkpointing
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():  # non-zero B (also the anchor's: a KL that is not zero)
            for name, tensor in adapter_tensors(trainer.model, POLICY).items():
                if "lora_B" in name:
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.05)
            if trainer.anchor is not None:
                trainer.anchor.update(0.0)
                for tensor in adapter_tensors(trainer.model, POLICY).values():
                    tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.02)
        logprobs, prefixes = _recording(trainer)
        stats = trainer.step(trajectories, keys)
        results[share, checkpointing] = (logprobs, _grads(trainer), prefixes, stats)
    reference_logprobs, reference_grads, _, reference_stats = results[False, False]
    assert results[True, False][2] == [True], "the shared-prefix path did not run: the comparison would be vacuous"
    assert results[True, True][2] == [False]
    if kl.kind != "none":
        assert abs(reference_stats["kl_mean"]) > 1e-6
    scale = max(g.abs().max() for g in reference_grads.values())
    assert scale > 0 and len(reference_logprobs) == len(trajectories)
    for key in ((True, False), (True, True)):
        logprobs, grads, _, stats = results[key]
        for i, expected in reference_logprobs.items():
            torch.testing.assert_close(logprobs[i], expected, rtol=1e-5, atol=1e-5)
        assert grads.keys() == reference_grads.keys()
        for name, expected in reference_grads.items():
            torch.testing.assert_close(grads[name], expected, rtol=1e-4, atol=1e-5 * float(scale))
        for name in ("loss", "kl_mean") if kl.kind != "none" else ("loss",):
            assert stats[name] == pytest.approx(reference_stats[name], rel=1e-4, abs=1e-6), name


def test_a_shared_prefix_is_refused_by_checkpointed_layers(base_model) -> None:
    from espl.rl.batching import masked_hidden, micro_batches

    trainer = LoRATrainer(_model(base_model), TrainerConfig(lora=SMALL_LORA, gradient_checkpointing=True))
    trajectories, _ = _grouped_trajectories(groups=1, size=2)
    (batch,) = micro_batches(trajectories, [1.0, 0.0], 2, pad_id=0)
    assert batch.prefix is not None
    trainer.model.train()
    with pytest.raises(ValueError, match="shared prefix"):
        masked_hidden(trainer.model, batch)
    trainer.model.eval()  # without autograd's training mode the layers keep the cache
    assert masked_hidden(trainer.model, batch).shape[0] == int(batch.mask.sum())


def test_micro_batches_run_each_shared_prompt_once() -> None:
    from espl.rl.batching import micro_batches

    trajectories, _ = _grouped_trajectories(groups=2, size=4)
    batches = list(micro_batches(trajectories, [1.0] * 8, 8, pad_id=0))
    assert len(batches) == 1 and batches[0].prefix is not None
    prefix = batches[0].prefix
    assert prefix.input_ids.shape[0] == 2 and sorted(prefix.rows.tolist()) == [0, 0, 0, 0, 1, 1, 1, 1]
    policy_tokens = sum(sum(t.loss_mask[1:]) for t in trajectories)
    assert int(batches[0].mask.sum()) == policy_tokens  # every policy token is still a target
    plain = list(micro_batches(trajectories, [1.0] * 8, 8, pad_id=0, share_prefix=False))
    assert plain[0].prefix is None and plain[0].input_ids.shape[1] > batches[0].input_ids.shape[1]


def test_all_zero_groups_skip_the_update(base_model) -> None:
    trajectories, keys = _trajectories(8)
    for t in trajectories:
        t.reward = 1.0
    trainer = LoRATrainer(_model(base_model), TrainerConfig(lora=SMALL_LORA))
    before = {k: v.clone() for k, v in adapter_tensors(trainer.model, POLICY).items()}
    stats = trainer.step(trajectories, keys)
    assert stats["skipped"] == 1.0 and stats["sequences"] == 0
    for name, tensor in adapter_tensors(trainer.model, POLICY).items():
        assert torch.equal(tensor, before[name])


def test_a_step_changes_only_the_policy_adapter(base_model) -> None:
    trajectories, keys = _trajectories(8)
    config = TrainerConfig(loss="ema_pg", lora=SMALL_LORA, lr=1e-2, kl=KLSettings(kind="topk", topk=8, ema_period=2))
    trainer = LoRATrainer(_model(base_model), config)
    anchor_before = {k: v.clone() for k, v in adapter_tensors(trainer.model, ANCHOR).items()}
    policy_before = {k: v.clone() for k, v in adapter_tensors(trainer.model, POLICY).items()}
    stats = trainer.step(trajectories, keys)
    assert stats["kl_mean"] >= -1e-6
    assert any(not torch.equal(v, policy_before[k]) for k, v in adapter_tensors(trainer.model, POLICY).items())
    assert all(torch.equal(v, anchor_before[k]) for k, v in adapter_tensors(trainer.model, ANCHOR).items())
    trainer.step(trajectories, keys)  # step 2: the EMA anchor moves toward the policy
    moved = [not torch.equal(v, anchor_before[k]) for k, v in adapter_tensors(trainer.model, ANCHOR).items()]
    assert any(moved)


def test_k3_against_the_frozen_base_is_zero_before_training(base_model) -> None:
    trajectories, keys = _trajectories(8)
    config = TrainerConfig(loss="grpo", lora=SMALL_LORA, kl=KLSettings(kind="k3", coef=0.1))
    stats = LoRATrainer(_model(base_model), config).step(trajectories, keys)
    assert abs(stats["kl_mean"]) < 1e-6  # LoRA B starts at zero: policy == base


def test_resume_reproduces_the_next_step_loss(base_model, tmp_path) -> None:
    config = TrainerConfig(loss="grpo", lora=SMALL_LORA, lr=5e-3, kl=KLSettings(kind="topk", topk=8, ema_period=1))
    batches = [_trajectories(8, seed=s) for s in range(3)]

    torch.manual_seed(0)
    straight = LoRATrainer(_model(base_model), config)
    straight.step(*batches[0])
    straight.step(*batches[1])
    expected = straight.step(*batches[2])

    torch.manual_seed(0)
    first = LoRATrainer(_model(base_model), config)
    first.step(*batches[0])
    first.step(*batches[1])
    save_checkpoint(first, tmp_path / "ckpt")
    del first
    torch.manual_seed(123)  # a fresh process would start from other RNG states
    resumed = LoRATrainer(_model(base_model), config)
    load_checkpoint(resumed, tmp_path / "ckpt")
    assert resumed.step_count == 2
    got = resumed.step(*batches[2])
    for key in ("loss", "pg_loss", "kl_mean", "grad_norm"):
        assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-8), key


def test_publish_writes_a_loadable_peft_folder(base_model, tmp_path) -> None:
    from peft import PeftModel

    trainer = LoRATrainer(_model(base_model), TrainerConfig(lora=SMALL_LORA))
    trainer.step(*_trajectories(8))
    adapter = trainer.publish(str(tmp_path / "adapters"))
    assert adapter.version == 1 and (tmp_path / "adapters" / "v000001" / "adapter_config.json").exists()
    loaded = PeftModel.from_pretrained(_model(base_model), adapter.path)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, trainer.model(ids).logits, rtol=1e-4, atol=1e-5)
