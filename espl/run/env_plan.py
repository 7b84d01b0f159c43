"""The run's env as planned: its registered id, the constructor arguments the config sets
(checked against what the env takes), and partial credit in training where the env has it."""

from __future__ import annotations

from typing import Any

from espl.config import ConfigError, RunConfig


def plan_env(config: RunConfig) -> tuple[str, dict[str, Any]]:
    """The env id `env.name` resolves to and its constructor arguments; an argument the env
    does not take is refused here, by name, rather than failing in the first episode."""
    from envs import registry

    try:
        env_id = registry.resolve(config.env.name)
    except KeyError as error:
        raise ConfigError(f"env.name: {error.args[0]}") from None
    accepted = env_parameters(env_id)
    kwargs = dict(config.env.kwargs)
    if "partial_credit" in kwargs:  # it would reach the evaluation envs too
        raise ConfigError("env.kwargs.partial_credit: set env.partial_credit instead; it applies to training only")
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise ConfigError(f"env.kwargs: {env_id} takes no {', '.join(unknown)}; it takes {sorted(accepted - {'split'})}")
    if config.env.retriever_url:
        if "retriever_url" not in accepted:
            raise ConfigError(f"env.retriever_url: {env_id} does not search, it would be ignored")
        kwargs["retriever_url"] = config.env.retriever_url
    return env_id, kwargs


def partial_credit(config: RunConfig, env_id: str) -> str | None:
    """`env.partial_credit` where the env offers it. A preset may ask for it whatever the env
    (the CPU preset does): an env with only right or wrong keeps its reward, and the run's
    summary says so."""
    if not config.env.partial_credit:
        return None
    if "partial_credit" not in env_parameters(env_id):
        return None
    return env_class(env_id).partial_credit


def env_class(env_id: str) -> type:
    """The class (or factory) a registered env id builds."""
    import gymnasium as gym

    entry_point = gym.spec(env_id).entry_point
    if isinstance(entry_point, str):
        module, _, attribute = entry_point.partition(":")
        entry_point = getattr(__import__(module, fromlist=[attribute]), attribute)
    return entry_point


def env_parameters(env_id: str) -> set[str]:
    """The keyword arguments an env's constructor takes (what `env.kwargs` may set)."""
    import inspect

    return set(inspect.signature(env_class(env_id)).parameters) - {"self", "render_mode"}
