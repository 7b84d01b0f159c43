"""The LoRA policy-gradient trainer: from one batch of trajectories to one or more optimizer steps.

The trainer updates the same in-process model the `hf` engine samples from, so the next
rollout already uses the new weights; for engines that load adapters from disk (`vllm`),
`publish()` writes the adapter and returns an `Adapter` with a new version.

By default a batch is one optimizer step (E-SPL). `mini_batches` and `epochs` make it several
(EMA-PG's search runs, PPO's update epochs; see `espl.rl.updates`): the old logprobs, the
denominator of every importance ratio, are fixed before the batch's first step, either the
engine's sampling logprobs or the trainer's own recomputed once (`old_logprobs`). EMA-PG's
anchor (`espl.rl.anchor`) moves after every P-th optimizer step (or P-th batch that took one,
`ema_period_unit`), counted over the whole run: a batch whose groups were all dropped takes
no step and does not count, so no update is lost to it.

Memory stays bounded by the micro-batch: each micro-batch's loss is scaled by its share of
the step's normaliser, so gradient accumulation gives exactly the mini-batch's gradient.
Within a micro-batch, logits exist a chunk of rows at a time and are recomputed in backward
(`espl.rl.logits`); `gradient_checkpointing` recomputes each decoder layer too.

Under `torchrun` every rank holds the whole batch and runs a share of each step's
micro-batches (`espl.rl.distributed`); the normalisers are the whole mini-batch's, and the
gradients are summed over the ranks before the optimizer step, so that step is the one a
single process takes. With `fsdp` the frozen base is sharded over the ranks as well
(`espl.rl.sharding`), and every rank runs the same number of passes per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Hashable, Sequence
from typing import Any

import torch

from agents.engine import Adapter
from agents.trajectory import Trajectory
from espl.rl import batching, logits, updates
from espl.rl.advantages import compute_advantages
from espl.rl.anchor import ANCHOR_KINDS, make_anchor
from espl.rl.distributed import DistributedContext, share
from espl.rl.kl import k3_kl
from espl.rl.lora import ANCHOR, POLICY, adapter_tensors, attach_lora, publish_adapter
from espl.rl.losses import LossInputs, LossOutput, make_loss
from espl.rl.published import PublishedAdapters
from espl.rl.settings import TrainerConfig
from espl.rl.sharding import check_sharding, lockstep_share, shard_base_model


class LoRATrainer:
    def __init__(
        self, model: Any, config: TrainerConfig | None = None, *, pad_id: int = 0, seed: int = 0,
        publish_dir: str | None = None, distributed: DistributedContext | None = None, device: str | None = None,
    ):
        """`device`: where a sharded base (`fsdp`) and the adapters go (default: the model's device)."""
        self.config = config or TrainerConfig()
        _check(self.config)
        check_sharding(self.config, distributed or DistributedContext())
        kl = self.config.kl
        options = dict(self.config.loss_options)
        if kl.kind != "none":
            options.setdefault("kl_coef", kl.coef)
        self.loss = make_loss(self.config.loss, **options)
        self.advantage_mode = self.config.advantage_mode or self.loss.default_advantage_mode
        with_factors = kl.kind == "topk" and kl.anchor == "factors"
        self.model = attach_lora(model, self.config.lora, with_anchor=with_factors, seed=seed)
        self.distributed = distributed or DistributedContext()
        """The ranks this trainer shares its steps with (one process alone: rank 0 of 1)."""
        device = device or str(next(self.model.parameters()).device)
        self.distributed.attach(device)
        if self.config.fsdp:
            shard_base_model(self.model, self.distributed, device)
        for adapter in (POLICY, ANCHOR) if with_factors else (POLICY,):
            self.distributed.broadcast_parameters(list(adapter_tensors(self.model, adapter).values()))
        self.anchor = make_anchor(self.model, kl.anchor) if kl.kind == "topk" else None
        if self.config.gradient_checkpointing:
            # Non-reentrant: LoRA weights inside a checkpointed layer get their gradients without
            # the inputs requiring grad (transformers still hooks the embeddings to require it).
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.device = torch.device(device)
        self.pad_id = pad_id
        self.seed = seed
        self.parameters = list(adapter_tensors(self.model, POLICY).values())
        self.optimizer = torch.optim.Adam(
            self.parameters, lr=self.config.lr, betas=self.config.betas, eps=self.config.eps,
            weight_decay=self.config.weight_decay,
        )
        self.step_count = 0
        """Batches seen (`step` calls), skipped ones included: the adapter's version."""
        self.optimizer_steps = 0
        """Optimizer steps taken: what the EMA period P counts (by default)."""
        self.trained_batches = 0
        """Batches that took at least one optimizer step: what P counts with `ema_period_unit="batch"`."""
        self.publish_dir = publish_dir
        """Where `published_adapter` writes (engines that load adapters from disk read it there)."""
        self.published = PublishedAdapters(self.config.keep_adapters)

    @property
    def steps_per_batch(self) -> int:
        return self.config.mini_batches * self.config.epochs

    # -- one batch -----------------------------------------------------------------------
    def step(self, trajectories: Sequence[Trajectory], group_keys: Sequence[Hashable]) -> dict[str, float]:
        """Advantages per group, then `epochs` x `mini_batches` optimizer steps on the kept sequences.

        Runs that take one step per batch without an EMA anchor (E-SPL's) report exactly the
        stats they always did; the others add `optimizer_steps` (this batch's), and with the
        anchor `anchor_updates` (this batch's) and the top-k KL's importance weight
        `kl_is_weight_{mean,max,min}`; with recomputed old logprobs the sampler correction
        `tis_weight_{mean,max,min}`. A loss with a clip reports `clip_fraction` (the mean over
        the batch's steps; the first step's is 0 on policy).
        """
        started = time.perf_counter()
        rewards = [t.reward for t in trajectories]
        adv = compute_advantages(rewards, group_keys, self.advantage_mode)
        kept = [i for i in range(len(trajectories)) if adv.keep[i] and trajectories[i].n_sampled > 0]
        stats: dict[str, float] = {"reward_mean": sum(rewards) / max(len(rewards), 1), "sequences": float(len(kept))}
        self.step_count += 1
        if not kept:
            stats.update(skipped=1.0, step=float(self.step_count), update_s=time.perf_counter() - started)
            stats.update(self._schedule_stats(0, 0))
            return stats
        chosen = [trajectories[i] for i in kept]
        advantages = [float(adv.advantages[i]) for i in kept]
        if self.loss.aggregation == "seq_mean_token_sum_norm":
            norm = self.config.norm_tokens or max(len(t.token_ids) - 1 for t in chosen)
            self.loss = dataclasses.replace(self.loss, max_tokens=norm)
        old = self._recompute_old_logprobs(chosen) if self.config.old_logprobs == "recompute" else None
        schedule = updates.mini_batch_rows(len(chosen), self.config.mini_batches, self.config.epochs,
                                           seed=f"{self.seed}:{self.step_count}")
        steps, grad_norms, anchor_updates = [], [], 0
        for rows in schedule:
            sums, grad_norm, moved = self._optimizer_step(
                [chosen[i] for i in rows], [advantages[i] for i in rows], None if old is None else [old[i] for i in rows])
            steps.append(sums)
            grad_norms.append(grad_norm)
            anchor_updates += moved
        self.trained_batches += 1
        if self._anchor_due("batch", self.trained_batches):
            self.anchor.update(self.config.kl.ema_eta)  # type: ignore[union-attr]
            anchor_updates += 1
        stats.update(updates.combine_steps(steps, self.config.epochs))
        stats.update(
            grad_norm=sum(grad_norms) / len(grad_norms), step=float(self.step_count),
            tokens=float(updates.normalisers(chosen)["tokens"]), update_s=time.perf_counter() - started,
        )
        stats.update(self._schedule_stats(len(schedule), anchor_updates))
        return stats

    def _schedule_stats(self, optimizer_steps: int, anchor_updates: int) -> dict[str, float]:
        out = {}
        if self.steps_per_batch > 1 or self.anchor is not None:
            out["optimizer_steps"] = float(optimizer_steps)
        if self.anchor is not None:
            out["anchor_updates"] = float(anchor_updates)
        return out

    def _optimizer_step(
        self, chosen: list[Trajectory], advantages: list[float], old: list[list[float]] | None
    ) -> tuple[dict[str, float], float, int]:
        """One optimizer step on a mini-batch; returns its stats, gradient norm and whether the anchor moved."""
        totals = updates.normalisers(chosen)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        # Checkpointed layers drop the prefix's key/value cache, and a sharded layer is gathered
        # again in backward only for its output's gradient, not its cache's: each row then runs
        # its own prompt.
        share_prefix = self.config.share_prefix and not (self.config.gradient_checkpointing or self.config.fsdp)
        plans = batching.plan_micro_batches(chosen, self.config.micro_batch_size, share_prefix=share_prefix)
        for plan, counts in self._own_share(plans, chosen):
            batch = batching.build_micro_batch(chosen, advantages, plan, pad_id=self.pad_id, device=self.device,
                                               old_logprobs=old)
            output = self._micro_loss(batch)
            if not counts:  # a repeat that keeps the sharded passes in step: its gradient is zero
                (output.loss * 0.0).backward()
                continue
            weight = updates.micro_weight(self.loss.aggregation, batch.mask, totals)
            (output.loss * weight).backward()
            token_share = float(batch.mask.sum()) / max(totals["tokens"], 1)
            updates.accumulate_stats(sums, output.stats, loss_weight=weight, token_share=token_share)
        if self.distributed.enabled:
            self.distributed.sum_gradients(self.parameters)
            sums = updates.merge_stats(self.distributed.gather(sums))
        clip = self.config.grad_clip if self.config.grad_clip > 0 else float("inf")  # 0: measured, not clipped
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, clip)
        self.optimizer.step()
        self.model.eval()
        self.optimizer_steps += 1
        moved = self._anchor_due("step", self.optimizer_steps)
        if moved:
            self.anchor.update(self.config.kl.ema_eta)  # type: ignore[union-attr]
        return sums, float(grad_norm), int(moved)

    def _own_share(self, plans: list[batching.MicroBatchPlan],
                   chosen: list[Trajectory]) -> list[tuple[batching.MicroBatchPlan, bool]]:
        """The micro-batches this rank runs, each with whether it counts: all of them in one
        process, else its token-balanced share; with a sharded base, padded so that every
        rank runs as many passes (`espl.rl.sharding.lockstep_share`)."""
        ranks = self.distributed
        if not ranks.enabled:
            return [(plan, True) for plan in plans]
        costs = [plan.cost(chosen) for plan in plans]
        if self.config.fsdp:
            return lockstep_share(plans, costs, ranks.world_size, ranks.rank)
        return [(plans[i], True) for i in share(costs, ranks.world_size, ranks.rank)]

    def _anchor_due(self, unit: str, count: int) -> bool:
        """Whether the EMA anchor moves now: P counts `unit`s, and `count` of them are done."""
        kl = self.config.kl
        return self.anchor is not None and kl.ema_period_unit == unit and count % kl.ema_period == 0

    @torch.no_grad()
    def _recompute_old_logprobs(self, chosen: list[Trajectory]) -> list[list[float]]:
        """The trainer's logprobs of every policy token under the weights before this batch's
        first step (aligned with each trajectory's token ids; other positions keep the engine's)."""
        self.model.eval()
        out = [list(t.logprobs) for t in chosen]
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)
        plans = batching.plan_micro_batches(chosen, self.config.micro_batch_size, share_prefix=self.config.share_prefix)
        computed: dict[int, list[float]] = {}
        for plan, counts in self._own_share(plans, chosen):
            batch = batching.build_micro_batch(chosen, [0.0] * len(chosen), plan, pad_id=self.pad_id,
                                               device=self.device)
            with autocast:
                hidden = batching.masked_hidden(self.model, batch)
            if not counts:  # a repeat that keeps the sharded passes in step
                continue
            values = logits.token_logprobs(self.model, hidden, batch.targets[batch.mask],
                                             temperature=self.config.temperature).tolist()
            start = 0
            for r, i in enumerate(batch.rows):
                positions = updates.masked_positions(chosen[i])
                count = int(batch.mask[r].sum())
                if count != len(positions):
                    raise AssertionError(f"row {i}: {count} policy targets in the batch, {len(positions)} in the mask")
                for position, value in zip(positions, values[start : start + count]):
                    out[i][position] = value
                computed[i] = out[i]
                start += count
        if self.distributed.enabled:  # each rank computed its share of the rows: every rank gets all
            for part in self.distributed.gather(computed):
                for i, row in part.items():
                    out[i] = row
        return out

    def _micro_loss(self, batch: batching.MicroBatch) -> LossOutput:
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.bf16)
        temperature = self.config.temperature
        targets = batch.targets[batch.mask]
        old_rows = batch.old_logprobs[batch.mask]
        with autocast:
            hidden = batching.masked_hidden(self.model, batch)
        kl, extra = None, {}
        if self.anchor is not None:
            with torch.no_grad(), self.anchor.active(), autocast:
                anchor_hidden = batching.masked_hidden(self.model, batch)
            logprobs_rows, kl_rows = logits.topk_kl_rows(
                self.model, hidden, anchor_hidden, targets, old_rows, k=self.config.kl.topk, form=self.config.kl.form,
                temperature=temperature, anchor_scope=self._anchor_head_scope,
            )
            kl = batching.scatter_rows(kl_rows, batch.mask)
            with torch.no_grad():  # the top-k KL's s = sg(pi(p) / pi_old(p)) on every policy token
                weight = (logprobs_rows.detach() - old_rows).exp()
                extra = {"kl_is_weight_mean": weight.mean(), "kl_is_weight_max": weight.max(),
                         "kl_is_weight_min": weight.min()}
        else:
            logprobs_rows = logits.token_logprobs(self.model, hidden, targets, temperature=temperature)
            if self.config.kl.kind == "k3":
                with torch.no_grad(), self.model.disable_adapter(), autocast:
                    ref_hidden = batching.masked_hidden(self.model, batch)
                    ref_rows = logits.token_logprobs(self.model, ref_hidden, targets, temperature=temperature)
                kl = batching.scatter_rows(k3_kl(logprobs_rows, ref_rows), batch.mask)
        logprobs = batching.scatter_rows(logprobs_rows, batch.mask)
        weights = None
        if batch.sampler_logprobs is not None:  # min(pi_old / pi_engine, C): the sampler/trainer correction
            weights = (batch.old_logprobs - batch.sampler_logprobs).exp().clamp(max=self.config.tis_cap)
        output = self.loss(LossInputs(logprobs, batch.old_logprobs, batch.advantages, batch.mask, kl, weights))
        output.stats.update(extra)
        return output

    def _anchor_head_scope(self) -> Any:
        """The anchor's output layer, while the top-k KL computes its logits: the policy's own
        unless LoRA adapts the output layer too."""
        if POLICY in getattr(logits.output_layer(self.model), "lora_A", {}):
            return self.anchor.active()  # type: ignore[union-attr]
        return contextlib.nullcontext()

    # -- hand-off to engines -------------------------------------------------------------
    def publish(self, directory: str) -> Adapter:
        """Write the policy adapter for engines that load adapters from disk; folders this
        trainer published before, beyond the newest `keep_adapters`, are removed."""
        adapter = publish_adapter(self.model, directory, self.step_count)
        self.published.record(adapter)
        return adapter

    def adapter(self) -> Adapter:
        """A reference to the live adapter in this trainer's model (engines sampling from it)."""
        return Adapter(name=POLICY, version=self.step_count)

    def published_adapter(self) -> Adapter:
        """`publish` to `publish_dir` (the `AdapterSource` hand-off to engines that load from disk)."""
        if self.publish_dir is None:
            raise ValueError("this trainer has no publish_dir: give one to hand adapters to a disk-loading engine")
        return self.publish(self.publish_dir)


def _check(config: TrainerConfig) -> None:
    """Settings the trainer cannot run with, refused before the model is touched."""
    kl = config.kl
    if kl.kind not in ("none", "k3", "topk"):
        raise ValueError(f"unknown KL kind {kl.kind!r}")
    if kl.anchor not in ANCHOR_KINDS:
        raise ValueError(f"unknown EMA anchor {kl.anchor!r}; expected one of {ANCHOR_KINDS}")
    if kl.ema_period < 1:
        raise ValueError(f"ema_period must be at least 1, got {kl.ema_period}")
    if kl.ema_period_unit not in ("step", "batch"):
        raise ValueError(f"ema_period_unit must be 'step' or 'batch', got {kl.ema_period_unit!r}")
    if config.mini_batches < 1:
        raise ValueError(f"mini_batches must be at least 1, got {config.mini_batches}")
    if config.epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {config.epochs}")
    if config.old_logprobs not in ("engine", "recompute"):
        raise ValueError(f"old_logprobs must be 'engine' or 'recompute', got {config.old_logprobs!r}")
    if not config.tis_cap >= 1.0:
        raise ValueError(f"tis_cap must be at least 1 (on-policy weights are 1), got {config.tis_cap}")
    if config.keep_adapters < 0:
        raise ValueError(f"keep_adapters must be at least 0 (0 keeps every one), got {config.keep_adapters}")
