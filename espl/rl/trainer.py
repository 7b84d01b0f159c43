"""The LoRA policy-gradient trainer: one optimizer step per iteration from trajectories.

The trainer updates the same in-process model the `hf` engine samples from, so the next
rollout already uses the new weights; for engines that load adapters from disk (`vllm`),
`publish()` writes the adapter and returns an `Adapter` with a new version.

Memory stays bounded by the micro-batch: each micro-batch's loss is scaled by its share of
the batch's normaliser (tokens or sequences, depending on the aggregation), so gradient
accumulation over micro-batches gives exactly the full-batch gradient.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from agents.engine import Adapter
from agents.trajectory import Trajectory
from espl.rl import batching
from espl.rl.advantages import compute_advantages
from espl.rl.ema import ema_update_
from espl.rl.kl import k3_kl, sampling_topk_ids, topk_reverse_kl_from_logits
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors, attach_lora, publish_adapter
from espl.rl.losses import LossInputs, make_loss
from espl.rl.settings import TrainerConfig


class LoRATrainer:
    def __init__(
        self, model: Any, config: TrainerConfig | None = None, *, pad_id: int = 0, seed: int = 0,
        publish_dir: str | None = None,
    ):
        self.config = config or TrainerConfig()
        kl = self.config.kl
        if kl.kind not in ("none", "k3", "topk"):
            raise ValueError(f"unknown KL kind {kl.kind!r}")
        options = dict(self.config.loss_options)
        if kl.kind != "none":
            options.setdefault("kl_coef", kl.coef)
        self.loss = make_loss(self.config.loss, **options)
        self.advantage_mode = self.config.advantage_mode or self.loss.default_advantage_mode
        self.model = attach_lora(model, self.config.lora, with_anchor=kl.kind == "topk", seed=seed)
        self.device = next(self.model.parameters()).device
        self.pad_id = pad_id
        self.parameters = list(adapter_tensors(self.model, POLICY).values())
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=self.config.lr, betas=self.config.betas, eps=self.config.eps,
            weight_decay=self.config.weight_decay,
        )
        self.step_count = 0
        self.publish_dir = publish_dir
        """Where `published_adapter` writes (engines that load adapters from disk read it there)."""

    # -- one update ----------------------------------------------------------------------
    def step(self, trajectories: Sequence[Trajectory], group_keys: Sequence[Hashable]) -> dict[str, float]:
        """Advantages per group, the loss over all kept sequences, one optimizer step."""
        started = time.perf_counter()
        rewards = [t.reward for t in trajectories]
        adv = compute_advantages(rewards, group_keys, self.advantage_mode)
        kept = [i for i in range(len(trajectories)) if adv.keep[i] and trajectories[i].n_sampled > 0]
        stats: dict[str, float] = {"reward_mean": sum(rewards) / max(len(rewards), 1), "sequences": float(len(kept))}
        self.step_count += 1
        if not kept:
            stats.update(skipped=1.0, step=float(self.step_count), update_s=time.perf_counter() - started)
            return stats
        chosen = [trajectories[i] for i in kept]
        advantages = [float(adv.advantages[i]) for i in kept]
        totals = _normalisers(chosen)
        if self.loss.aggregation == "seq_mean_token_sum_norm":
            norm = self.config.norm_tokens or max(len(t.token_ids) - 1 for t in chosen)
            self.loss = dataclasses.replace(self.loss, max_tokens=norm)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for batch in batching.micro_batches(chosen, advantages, self.config.micro_batch_size, pad_id=self.pad_id,
                                            device=self.device, share_prefix=self.config.share_prefix):
            output = self._micro_loss(batch)
            weight = _micro_weight(self.loss.aggregation, batch.mask, totals)
            (output.loss * weight).backward()
            token_share = float(batch.mask.sum()) / max(totals["tokens"], 1)
            _accumulate_stats(sums, output.stats, loss_weight=weight, token_share=token_share)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.grad_clip)
        self.optimizer.step()
        self.model.eval()
        if self.config.kl.kind == "topk" and self.step_count % self.config.kl.ema_period == 0:
            ema_update_(adapter_tensors(self.model, ANCHOR), adapter_tensors(self.model, POLICY), self.config.kl.ema_eta)
        stats.update(sums)
        stats.update(
            grad_norm=float(grad_norm), step=float(self.step_count), tokens=float(totals["tokens"]),
            update_s=time.perf_counter() - started,
        )
        return stats

    def _micro_loss(self, batch: batching.MicroBatch):
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)
        temperature = self.config.temperature
        targets = batch.targets[batch.mask]
        with autocast:
            hidden = batching.masked_hidden(self.model, batch)
        kl = None
        if self.config.kl.kind == "topk":
            head = batching.output_layer(self.model)
            logits = head(hidden).float() / temperature
            logprobs_rows = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
            with torch.no_grad(), _adapter(self.model, ANCHOR), autocast:
                anchor_logits = head(batching.masked_hidden(self.model, batch)).float() / temperature
            old_rows = batch.old_logprobs[batch.mask]
            kl_rows = topk_reverse_kl_from_logits(
                logits[None], anchor_logits[None], targets[None], old_rows[None],
                sampling_topk_ids(logits[None], self.config.kl.topk), form=self.config.kl.form,
            )[0]
            kl = batching.scatter_rows(kl_rows, batch.mask)
        else:
            logprobs_rows = batching.token_logprobs(self.model, hidden, targets, temperature=temperature)
            if self.config.kl.kind == "k3":
                with torch.no_grad(), self.model.disable_adapter(), autocast:
                    ref_hidden = batching.masked_hidden(self.model, batch)
                    ref_rows = batching.token_logprobs(self.model, ref_hidden, targets, temperature=temperature)
                kl = batching.scatter_rows(k3_kl(logprobs_rows, ref_rows), batch.mask)
        logprobs = batching.scatter_rows(logprobs_rows, batch.mask)
        return self.loss(LossInputs(logprobs, batch.old_logprobs, batch.advantages, batch.mask, kl))

    # -- hand-off to engines -------------------------------------------------------------
    def publish(self, directory: str) -> Adapter:
        """Write the policy adapter for engines that load adapters from disk."""
        return publish_adapter(self.model, directory, self.step_count)

    def adapter(self) -> Adapter:
        """A reference to the live adapter in this trainer's model (engines sampling from it)."""
        return Adapter(name=POLICY, version=self.step_count)

    def published_adapter(self) -> Adapter:
        """`publish` to `publish_dir` (the `AdapterSource` hand-off to engines that load from disk)."""
        if self.publish_dir is None:
            raise ValueError("this trainer has no publish_dir: give one to hand adapters to a disk-loading engine")
        return self.publish(self.publish_dir)


class _adapter:
    """Context manager: run the peft model with another adapter active, then switch back."""

    def __init__(self, model: Any, name: str):
        self.model, self.name = model, name

    def __enter__(self) -> None:
        self.previous = self.model.active_adapter
        self.model.set_adapter(self.name)

    def __exit__(self, *exc: object) -> None:
        self.model.set_adapter(self.previous)
        # set_adapter marks only the active adapter trainable; keep the anchor frozen.
        for tensor in adapter_tensors(self.model, ANCHOR).values():
            tensor.requires_grad_(False)


LOSS_STATS = frozenset({"loss", "pg_loss", "kl_loss"})
"""Stats that add up across micro-batches like the loss does (with its weights)."""


def _accumulate_stats(sums: dict[str, float], stats: dict[str, Tensor], *, loss_weight: float, token_share: float) -> None:
    """Fold one micro-batch's stats into the step's: loss terms as the loss, extremes as
    extremes, counts as sums and per-token means weighted by the micro-batch's tokens."""
    for key, tensor in stats.items():
        value = float(tensor)
        if key in LOSS_STATS:
            sums[key] = sums.get(key, 0.0) + value * loss_weight
        elif key.endswith("_max"):
            sums[key] = max(sums.get(key, value), value)
        elif key.endswith("_min"):
            sums[key] = min(sums.get(key, value), value)
        elif key.startswith("num_"):
            sums[key] = sums.get(key, 0.0) + value
        else:
            sums[key] = sums.get(key, 0.0) + value * token_share


def _normalisers(trajectories: Sequence[Trajectory]) -> dict[str, int]:
    """Batch totals that token/sequence means divide by (targets are ids[1:])."""
    tokens = sum(sum(t.loss_mask[1:]) for t in trajectories)
    sequences = sum(1 for t in trajectories if sum(t.loss_mask[1:]) > 0)
    return {"tokens": tokens, "sequences": sequences}


def _micro_weight(aggregation: str, mask: Tensor, totals: dict[str, int]) -> float:
    """This micro-batch's share of the batch normaliser, so accumulated grads equal full-batch."""
    if aggregation == "token_sum":
        return 1.0
    if aggregation == "token_mean":
        return float(mask.sum()) / max(totals["tokens"], 1)
    return float((mask.sum(dim=1) > 0).sum()) / max(totals["sequences"], 1)
