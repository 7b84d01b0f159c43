"""The `hf` engine: transformers + peft in process, with our own batched sampling loop.

Why not `model.generate`: the rollout needs, per sequence, the exact ids it sampled, the
logprob of each under the sampling distribution, per-sequence stop strings and per-sequence
seeded noise. The loop here is a plain prefill + decode over the model's forward with a KV
cache: prompts are left-padded (explicit position ids, so padding does not shift positions),
finished sequences leave the batch (their cache rows are dropped), and the ids returned are
exactly the ids fed back into the model.

Adapters: the engine holds the model the trainer updates (`engine.model`). `adapter=None`
samples from the base weights (peft's `disable_adapter()`); `Adapter(name=...)` activates
that named adapter for the call (loading it from `adapter.path` first if the engine has not
seen that name/version). Every call runs in eval mode under `torch.inference_mode()` and
restores the train/eval mode, the active adapter and every parameter's `requires_grad`
afterwards, so training can go on between calls.

Structured generation (`params.constraint`, `agents.engines.constraints`): each sequence has an
xgrammar matcher whose mask applies after the reported logprobs are taken (they stay the
unmasked model's) and before the choice; free rows do no mask work.

Reproducibility: with `params.seed` set, sequence `j` of prompt `i` draws its noise from a
generator seeded by `(seed, i, j)`, so results do not depend on batching. Without a seed the
base seed comes from torch's global RNG (so `torch.manual_seed` makes runs repeatable).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch

from agents.engine import Adapter, AdapterSource, Completion, Prompt, SamplingParams
from agents.engines.constraints import BatchMasker, ConstraintError, GrammarCache
from agents.engines.prompt_ids import prompt_token_ids
from agents.engines.sampling import LOGPROBS_MODES, LogprobsMode, choose_tokens
from agents.engines.stopping import StopScanner
from agents.engines.turn_cache import (
    DEFAULT_MAX_BYTES,
    TurnCache,
    seed_cache,
    supports_reuse,
    weights_key,
)
from agents.models import DEFAULT_MODEL, load_model, load_tokenizer


@dataclass
class _Row:
    """One sequence being generated: sample `sample` of prompt `prompt`."""

    prompt: int
    sample: int
    prompt_ids: list[int]
    limit: int
    scanner: StopScanner
    generator: torch.Generator
    matcher: Any = None  # an xgrammar GrammarMatcher when a constraint shapes the row
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    result: Completion | None = None


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def _distinct_prompts(rows: Sequence[_Row]) -> tuple[list[_Row], list[int]]:
    """One row per distinct prompt, and each row's position in that list.

    Rows with the same prompt ids (the n samples of a prompt, a GRPO group's episodes) are
    prefilled once and their keys/values copied: n times less prefill for the same result.
    """
    position: dict[tuple[int, ...], int] = {}
    distinct: list[_Row] = []
    expand: list[int] = []
    for row in rows:
        key = tuple(row.prompt_ids)
        if key not in position:
            position[key] = len(distinct)
            distinct.append(row)
        expand.append(position[key])
    return distinct, expand


class HFEngine:
    """Batched in-process generation with exact token ids and logprobs (see module doc).

    `model` is a model name or folder (loaded here with `dtype` on `device`) or an already
    loaded model, optionally a peft model, used as is (then `tokenizer` is required and
    `dtype`/`device` are ignored). `max_batch_size` caps the sequences (prompts x n) decoded
    together. `turn_cache_bytes` bounds the keys/values kept from one call for the next turn
    of the same conversations (`agents.engines.turn_cache`; 0 turns reuse off).
    """

    name = "hf"

    def __init__(
        self,
        model: str | Any = DEFAULT_MODEL,
        *,
        tokenizer: Any = None,
        dtype: str = "float32",
        device: str = "cpu",
        max_batch_size: int = 32,
        logprobs_mode: LogprobsMode = "scaled",
        turn_cache_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        if isinstance(model, str):
            self._model = load_model(model, dtype=dtype, device=device)
            self._tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        else:
            if tokenizer is None:
                raise ValueError("pass the tokenizer along with a loaded model")
            self._model, self._tokenizer = model, tokenizer
        self.max_batch_size = max_batch_size
        self.logprobs_mode: LogprobsMode = logprobs_mode
        self._adapter_versions: dict[str, int] = {}
        self.turn_cache = TurnCache(turn_cache_bytes)
        config = self._model.config
        self.max_positions: int | None = getattr(config, "max_position_embeddings", None)
        self.eos_ids = self._eos_ids()
        pad = self._tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else min(self.eos_ids))

    # -- protocol surface ------------------------------------------------------------------

    @property
    def model(self) -> Any:
        """The in-process model (a peft model once adapters are attached); the trainer updates it."""
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return next(self._model.parameters()).device

    def adapter_from(self, source: AdapterSource) -> Adapter:
        """The trainer's live adapter when this engine samples from the trainer's own model (no
        copy, no sync); otherwise the adapter the trainer publishes, loaded from its folder."""
        if getattr(source, "model", None) is self._model:
            return source.adapter()
        return source.published_adapter()

    def release_turns(self) -> None:
        """Free the keys/values kept for a next turn: the caller's conversations have ended."""
        self.turn_cache.clear()

    def close(self) -> None:
        self.turn_cache.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order; a bad prompt gets failed ones."""
        self._check_params(params)
        results: list[list[Completion]] = [[] for _ in prompts]
        if params.constraint is not None:
            try:
                self.grammars.compiled(params.constraint)
            except ConstraintError as error:  # the same for every prompt: all fail, none raises
                return [[Completion.failed(str(error)) for _ in range(params.n)] for _ in prompts]
        base_seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        rows: list[_Row] = []
        for index, prompt in enumerate(prompts):
            try:
                ids = self.prompt_ids(prompt)
            except Exception as error:  # noqa: BLE001 - any bad prompt (even a template error) fails alone
                results[index] = [Completion.failed(f"bad prompt: {error}") for _ in range(params.n)]
                continue
            rows.extend(self._row(index, sample, ids, params, base_seed) for sample in range(params.n))
        self._decode(rows, params, adapter)
        for row in sorted(rows, key=lambda r: (r.prompt, r.sample)):
            assert row.result is not None
            results[row.prompt].append(row.result)
        return results

    @cached_property
    def grammars(self) -> GrammarCache:
        """The engine's compiled constraints (built on first use, keyed by constraint)."""
        return GrammarCache.for_model(self._model, self._tokenizer, self.eos_ids)

    def _decode(self, rows: list[_Row], params: SamplingParams, adapter: Adapter | None) -> None:
        """Generate every row, `max_batch_size` at a time, longest prompts first (sets `row.result`)."""
        rows = sorted(rows, key=lambda row: len(row.prompt_ids), reverse=True)
        with self._adapter_scope(adapter), self._inference_scope():
            if self.turn_cache.enabled:
                identity = None if adapter is None else (adapter.name, adapter.version)
                self.turn_cache.begin(weights_key(self._model, identity))
            for start in range(0, len(rows), self.max_batch_size):
                batch = rows[start : start + self.max_batch_size]
                try:
                    self._generate_batch(batch, params)
                except RuntimeError as error:  # e.g. out of memory: fail these rows, keep the rest
                    for row in batch:
                        row.result = Completion.failed(f"generation failed: {error}")
            self.turn_cache.finish()

    # -- prompts ---------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids for a token prompt (validated) or a conversation (chat template applied)."""
        vocab = self._model.get_input_embeddings().num_embeddings
        limit = f"{self.max_positions} positions"
        return prompt_token_ids(prompt, self._tokenizer, vocab_size=vocab, max_length=self.max_positions, limit=limit)

    @staticmethod
    def _check_params(params: SamplingParams) -> None:
        if params.n < 1 or params.max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        if params.temperature < 0 or not 0 < params.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top_p in (0, 1]")

    def _row(self, prompt: int, sample: int, ids: list[int], params: SamplingParams, base_seed: int) -> _Row:
        room = params.max_tokens if self.max_positions is None else self.max_positions - len(ids)
        seed = int(np.random.SeedSequence([base_seed % 2**63, prompt, sample]).generate_state(1, np.uint64)[0])
        generator = torch.Generator(device=self.device).manual_seed(seed % 2**63)
        matcher = None if params.constraint is None else self.grammars.matcher(params.constraint)
        return _Row(prompt, sample, ids, min(params.max_tokens, room), StopScanner(self._tokenizer, params.stop), generator, matcher)

    def _eos_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        for source in (getattr(self._model, "generation_config", None), self._model.config, self._tokenizer):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        if not ids:
            raise ValueError("the model and tokenizer define no end-of-sequence token")
        return frozenset(ids)

    # -- the sampling loop -----------------------------------------------------------------

    def _generate_batch(self, rows: list[_Row], params: SamplingParams) -> None:
        """Prefill the left-padded batch, then decode one token per step until every row ends.

        Rows that continue a sequence of the previous call start from its kept keys/values and
        prefill only their new tokens (layout ``[pad, reused, pad, new]``, see `turn_cache`).
        Rows with the same prompt are prefilled once (`_distinct_prompts`).
        """
        from transformers import DynamicCache

        device = self.device
        cache = DynamicCache(config=self._model.config)
        reuse = self.turn_cache.enabled and supports_reuse(cache)
        distinct, expand = _distinct_prompts(rows)
        reused = [self.turn_cache.lookup(row.prompt_ids) if reuse else None for row in distinct]
        past = max((entry.length for entry in reused if entry is not None), default=0)
        new_ids = [row.prompt_ids[entry.length if entry is not None else 0 :] for row, entry in zip(distinct, reused)]
        width = max(len(ids) for ids in new_ids)
        input_ids = torch.full((len(distinct), width), self.pad_id, dtype=torch.long, device=device)
        attention = torch.zeros((len(distinct), past + width), dtype=torch.long, device=device)
        for i, (ids, entry) in enumerate(zip(new_ids, reused)):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, device=device)
            attention[i, past + width - len(ids) :] = 1
            if entry is not None:
                attention[i, past - entry.length : past] = 1
        self.turn_cache.reused_tokens += sum(
            reused[j].length for j in expand if reused[j] is not None  # type: ignore[union-attr]
        )
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, past:]
        if past:
            seed_cache(cache, reused, past)
        active = list(rows)
        prefill = len(distinct) < len(rows)
        masker = BatchMasker(self.grammars.vocab_size, len(rows)) if any(r.matcher is not None for r in rows) else None
        while active:
            logits = self._model(
                input_ids=input_ids,
                attention_mask=attention,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
            if prefill:  # every row takes its own copy of its prompt's keys/values and logits
                index = torch.tensor(expand, device=device)
                cache.batch_select_indices(index)
                logits, attention, positions = logits[index], attention[index], positions[index]
                prefill = False
            tokens, logprobs = choose_tokens(
                logits.float(),
                temperature=params.temperature,
                top_p=params.top_p,
                generators=[row.generator for row in active],
                logprobs_mode=self.logprobs_mode,
                mask=None if masker is None else masker.step([row.matcher for row in active], device),
            )
            keep = [i for i, (row, token, logprob) in enumerate(zip(active, tokens.tolist(), logprobs.tolist()))
                    if not self._advance(row, token, logprob)]
            if reuse and len(keep) < len(active):
                self._keep_finished(active, keep, cache, attention)
            if not keep:
                break
            if len(keep) < len(active):
                kept = torch.tensor(keep, device=device)
                cache.batch_select_indices(kept)
                attention, positions, tokens = attention[kept], positions[kept], tokens[kept]
                active = [active[i] for i in keep]
            attention = torch.cat([attention, attention.new_ones((len(active), 1))], dim=-1)
            positions = positions[:, -1:] + 1
            input_ids = tokens[:, None]

    def _keep_finished(self, active: list[_Row], keep: list[int], cache: Any, attention: torch.Tensor) -> None:
        """Hand the rows that just finished to the turn cache (all but their last token is cached)."""
        still = set(keep)
        for i, row in enumerate(active):
            if i not in still:
                columns = attention[i].nonzero().squeeze(-1)
                self.turn_cache.keep(row.prompt_ids + row.token_ids[:-1], cache, i, columns)

    def _advance(self, row: _Row, token: int, logprob: float) -> bool:
        """Record one sampled token; True (and `row.result` set) when the row has finished."""
        row.token_ids.append(token)
        row.logprobs.append(logprob)
        if row.matcher is not None and not row.matcher.accept_token(token):
            row.result = Completion.failed(f"the constraint refused token {token}")
            return True
        ended = token in self.eos_ids or (row.matcher is not None and row.matcher.is_terminated())
        stop = None if ended else row.scanner.scan(row.token_ids)
        if ended or stop is not None:
            reason = "stop"
        elif len(row.token_ids) >= row.limit:
            reason = "length"
        else:
            return False
        text = row.scanner.decode(row.token_ids)
        extra = {} if row.matcher is None else {"constrained": True}
        row.result = Completion(list(row.token_ids), list(row.logprobs), text, reason, stop_string=stop, extra=extra)
        return True

    # -- model state -----------------------------------------------------------------------

    @contextmanager
    def _inference_scope(self) -> Iterator[None]:
        """Eval mode and no autograd for the call; the caller's train/eval mode comes back after."""
        was_training = self._model.training
        self._model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            self._model.train(was_training)

    @contextmanager
    def _adapter_scope(self, adapter: Adapter | None) -> Iterator[None]:
        """Base weights for `None`, else the named adapter; restores what the trainer had set."""
        if adapter is None:
            with self._model.disable_adapter() if _is_peft(self._model) else nullcontext():
                yield
            return
        self._ensure_adapter(adapter)
        model = self._model
        previous = model.active_adapter
        trainable = {name: p.requires_grad for name, p in model.named_parameters()}
        model.set_adapter(adapter.name)
        try:
            yield
        finally:
            model.set_adapter(previous)
            for name, parameter in model.named_parameters():
                parameter.requires_grad_(trainable[name])

    def _ensure_adapter(self, adapter: Adapter) -> None:
        """Make `adapter.name` available: load it from `adapter.path` when the name is new, and
        reload its weights when a newer `version` of a path-loaded adapter is asked for. An
        adapter the trainer attached in process is live already; its path is not read."""
        loaded = _is_peft(self._model) and adapter.name in self._model.peft_config
        if adapter.path is None:
            if not loaded:
                raise ValueError(f"the model has no adapter named {adapter.name!r} and no path to load it from")
            return
        known = self._adapter_versions.get(adapter.name)
        if loaded and (known is None or adapter.version <= known):
            return
        from peft import PeftModel
        from peft.utils import load_peft_weights, set_peft_model_state_dict

        if loaded:
            weights = load_peft_weights(adapter.path, device=str(self.device))
            set_peft_model_state_dict(self._model, weights, adapter_name=adapter.name)
        elif _is_peft(self._model):
            self._model.load_adapter(adapter.path, adapter_name=adapter.name)
        else:
            self._model = PeftModel.from_pretrained(self._model, adapter.path, adapter_name=adapter.name)
        self._adapter_versions[adapter.name] = adapter.version
