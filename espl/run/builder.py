"""Build a run's parts from its config: policy engine, trainer, env factories, reflector.

The one place that knows how the parts fit: the `hf` engine samples from the very model the
trainer updates (LoRA attached first, then the engine wraps the peft model); a disk-loading
engine (`vllm`) gets adapters published by the trainer, which then trains its own copy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agents.engine import Adapter, Engine, SamplingParams
from envs import registry
from envs.base import TextEnv
from espl.config import ReflectorConfig, RunConfig


@dataclass
class Policy:
    """The policy engine plus, when the method trains, the trainer and the adapter to sample with."""

    engine: Engine
    trainer: Any = None
    adapter: Adapter | None = None
    adapter_dir: str | None = None

    def after_update(self) -> None:
        """Point sampling at the weights the trainer just produced."""
        if self.trainer is None:
            return
        if self.engine.name == "hf":
            self.adapter = self.trainer.adapter()
        else:
            assert self.adapter_dir is not None
            self.adapter = self.trainer.publish(self.adapter_dir)


def build_policy(config: RunConfig, *, train: bool, adapter_dir: str) -> Policy:
    from agents import models
    from agents.engines import make_engine

    policy = config.policy
    if not train:
        kwargs = _engine_kwargs(config)
        return Policy(make_engine(policy.engine, model=policy.model, **kwargs))
    from espl.rl.trainer import LoRATrainer

    trainer_config = replace(config.rl, temperature=policy.temperature)
    tokenizer = models.load_tokenizer(policy.model)
    device = "cuda" if _cuda() else "cpu"
    model = models.load_model(policy.model, dtype="float32", device=device)
    trainer = LoRATrainer(model, trainer_config, pad_id=tokenizer.pad_token_id or 0, seed=config.seed)
    if policy.engine == "hf":
        from agents.engines.hf import HFEngine

        engine = HFEngine(trainer.model, tokenizer=tokenizer)
        return Policy(engine, trainer, trainer.adapter())
    if policy.engine == "openai":
        raise ValueError("the openai engine cannot train: use hf or vllm for a method that trains")
    engine = make_engine(policy.engine, model=policy.model, **_engine_kwargs(config))
    result = Policy(engine, trainer, None, adapter_dir)
    result.adapter = trainer.publish(adapter_dir)
    return result


def _engine_kwargs(config: RunConfig) -> dict[str, Any]:
    policy = config.policy
    if policy.engine == "openai":
        return {"base_urls": policy.base_urls}
    if policy.engine == "vllm":
        return {"dtype": "bfloat16" if policy.dtype == "float32" else policy.dtype, "seed": config.seed}
    return {"dtype": policy.dtype, "device": "cuda" if _cuda() else "cpu"}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def env_factory(config: RunConfig, split: str, tokenizer: Any = None) -> Callable[[], TextEnv]:
    """A zero-argument builder of the run's env on `split`.

    Context the env declares in its constructor is passed along: the policy's `tokenizer`
    (token budgets of search observations) and the `retriever_url`.
    """
    env_id = registry.resolve(config.env.name)
    accepted = _constructor_parameters(env_id)
    kwargs = dict(config.env.kwargs)
    if "tokenizer" in accepted and tokenizer is not None:
        kwargs.setdefault("tokenizer", tokenizer)
    if "retriever_url" in accepted and config.env.retriever_url:
        kwargs.setdefault("retriever_url", config.env.retriever_url)
    return lambda: registry.make(env_id, split=split, **kwargs)


def _constructor_parameters(env_id: str) -> set[str]:
    import gymnasium as gym

    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str):
        module, _, attribute = entry_point.partition(":")
        entry_point = getattr(__import__(module, fromlist=[attribute]), attribute)
    return set(inspect.signature(entry_point).parameters)


def build_reflector(config: ReflectorConfig, policy: Policy, seed: int) -> Any:
    """The reflector: by default the policy's engine with the adapter off (the frozen base)."""
    from espl.evolution.operators import Reflector

    sampling = SamplingParams(
        temperature=config.temperature, top_p=0.95, max_tokens=config.max_tokens, seed=seed, logprobs=False
    )
    if config.engine == "policy":
        return Reflector(policy.engine, sampling, adapter=None)
    from agents.engines import make_engine

    kwargs: dict[str, Any] = {"base_urls": config.base_urls} if config.engine == "openai" else {}
    engine = make_engine(config.engine, model=config.model or None, **kwargs)
    return Reflector(engine, sampling, adapter=None)


def reflector_is_separate(config: ReflectorConfig) -> bool:
    """Whether reflection can run concurrently with the update (it does not share the model)."""
    return config.engine != "policy"
