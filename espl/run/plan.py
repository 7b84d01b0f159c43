"""A run's plan: every part's settings, resolved and cross-checked before anything loads.

`plan_run(config)` turns a `RunConfig` into what each part is built with (engine and its
arguments, trainer settings, sampling of training and evaluation, selection, operators and
their probabilities, the reflector) and rejects, with a `ConfigError` naming the key, any
setting that could not take effect: an unknown env, method, engine, loss, selection or
operator; options a part does not have; a loss that needs a KL term without one; training on
an engine that cannot train; a setting that only another engine or KL kind reads. The run
builder builds from the plan alone, so a setting that changes nothing in the plan changes
nothing in the run (the test of every key relies on it). It loads no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from agents.devices import DeviceError, Precision, resolve_precision
from agents.engine import SamplingParams
from agents.rollout import RolloutConfig
from espl.config import ConfigError, PolicyConfig, RunConfig
from espl.rl.settings import KLSettings, TrainerConfig
from espl.run.env_plan import partial_credit, plan_env
from espl.run.fleet_plan import fleet_engine_kwargs
from espl.run.kept_precision import keep_precision
from espl.run.vllm_plan import reflector_vllm_kwargs, refuse_vllm_settings, vllm_engine_kwargs


@dataclass(frozen=True)
class EngineSpec:
    name: str
    model: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    options: dict[str, Any]
    probability: float


@dataclass(frozen=True)
class RunPlan:
    method: str
    trains_weights: bool
    seed: int
    loop: dict[str, Any]
    env_id: str
    env_kwargs: dict[str, Any]
    partial_credit: str | None
    """What a partly right answer scores in training (`env.partial_credit`, where the env has
    a graded reward), in words; None: the env's own reward, as in evaluation."""
    splits: tuple[str, str]
    engine: EngineSpec
    precision: Precision | None
    """Device and dtype of the policy's model (and the trainer's); None: servers choose."""
    trainer: TrainerConfig | None
    train_rollout: RolloutConfig
    eval_rollout: RolloutConfig
    population: dict[str, Any]
    selection: tuple[str, dict[str, Any]]
    eval_prompt: str
    operators: tuple[OperatorSpec, ...]
    evolver: dict[str, Any]
    """How the evolver adds children and scores prompts drawn twice."""
    reflector: EngineSpec | None
    """None: the policy's own engine with its adapter off."""
    reflector_sampling: SamplingParams
    reflector_structured: bool
    trackers: tuple[str, ...] = ()
    """The experiment trackers the records also go to (`report_to`, checked: known and installed)."""


def plan_run(config: RunConfig, *, started_in: Precision | None = None) -> RunPlan:
    """`started_in`: the precision a resumed run started in, which "auto" settings keep
    (`espl.run.kept_precision`); None: a new run, resolved on this machine."""
    from espl.methods import get_method

    try:
        method = get_method(config.method)
    except ValueError as error:
        raise ConfigError(f"method: {error}") from None
    _check_ranges(config)
    env_id, env_kwargs = plan_env(config)
    engine, precision = _engine(config, trains=method.trains_weights, started_in=started_in)
    trainer = _trainer(config) if method.trains_weights else None
    policy = config.policy
    evolution = config.evolution
    return RunPlan(
        method=config.method,
        trains_weights=method.trains_weights,
        seed=config.seed,
        loop={name: getattr(config, name) for name in LOOP_KEYS} | {"prompts_per_iteration": evolution.prompts_per_iteration},
        env_id=env_id,
        env_kwargs=env_kwargs,
        partial_credit=partial_credit(config, env_id),
        splits=(config.env.train_split, config.env.test_split),
        engine=engine,
        precision=precision,
        trainer=trainer,
        train_rollout=rollout_config(config, policy.temperature),
        eval_rollout=rollout_config(config, config.eval_temperature),
        population={"capacity": evolution.capacity, "window": evolution.window,
                    "initial_principles": None if evolution.initial_principles is None
                    else tuple(evolution.initial_principles)},
        selection=_selection(config),
        eval_prompt=evolution.eval_prompt,
        operators=operator_specs(config, evolution.operators),
        evolver=_evolver(config),
        reflector=_reflector(config, started_in, trains=method.trains_weights),
        reflector_sampling=reflector_sampling(config),
        reflector_structured=config.evolution.reflector.structured,
        trackers=_trackers(config),
    )


LOOP_KEYS = ("iterations", "problems_per_iteration", "samples_per_problem", "eval_every", "eval_samples",
             "eval_limit", "max_rollouts", "checkpoint_every")


def _trackers(config: RunConfig) -> tuple[str, ...]:
    from espl.tracking import TrackingError, check_report_to

    try:
        return check_report_to(config.report_to)
    except TrackingError as error:
        raise ConfigError(f"report_to: {error}") from None


# -- ranges --------------------------------------------------------------------------------------


def _check_ranges(config: RunConfig) -> None:
    policy, evolution = config.policy, config.evolution
    at_least = {
        "iterations": (config.iterations, 0), "problems_per_iteration": (config.problems_per_iteration, 1),
        "samples_per_problem": (config.samples_per_problem, 1), "eval_every": (config.eval_every, 0),
        "eval_samples": (config.eval_samples, 1), "checkpoint_every": (config.checkpoint_every, 1),
        "policy.max_tokens": (policy.max_tokens, 1), "evolution.prompts_per_iteration": (evolution.prompts_per_iteration, 1),
        "evolution.window": (evolution.window, 1), "evolution.capacity": (evolution.capacity, 1),
        "evolution.reflector.max_tokens": (evolution.reflector.max_tokens, 1), "rl.micro_batch_size": (config.rl.micro_batch_size, 1),
    }
    for key, (value, low) in at_least.items():
        if value < low:
            raise ConfigError(f"{key} must be at least {low}, got {value}")
    for key, value in (("eval_limit", config.eval_limit), ("max_rollouts", config.max_rollouts)):
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be at least 1 (or unset), got {value}")
    if policy.max_total_tokens <= policy.max_tokens:
        raise ConfigError(f"policy.max_total_tokens ({policy.max_total_tokens}) must exceed policy.max_tokens ({policy.max_tokens})")
    if not 0.0 < policy.top_p <= 1.0:
        raise ConfigError(f"policy.top_p must be in (0, 1], got {policy.top_p}")
    for key, value in (("policy.temperature", policy.temperature), ("eval_temperature", config.eval_temperature),
                       ("evolution.reflector.temperature", evolution.reflector.temperature)):
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if not 0.0 <= evolution.crossover_probability <= 1.0:
        raise ConfigError(f"evolution.crossover_probability must be in [0, 1], got {evolution.crossover_probability}")


# -- engine ------------------------------------------------------------------------------


def policy_precision(config: RunConfig, started_in: Precision | None = None) -> Precision:
    """`policy.device` and `policy.dtype` resolved on this machine (`agents.devices`), or kept
    from `started_in` where they are "auto" (`espl.run.kept_precision`): a GPU that is not
    there is refused here, before any model loads."""
    try:
        if started_in is not None:
            return keep_precision(config.policy.device, config.policy.dtype, started_in)
        return resolve_precision(config.policy.device, config.policy.dtype)
    except DeviceError as error:
        raise ConfigError(f"policy.device: {error}") from None


def _engine(config: RunConfig, *, trains: bool, started_in: Precision | None) -> tuple[EngineSpec, Precision | None]:
    from agents.engines import list_engines

    policy = config.policy
    if policy.engine not in list_engines():
        raise ConfigError(f"policy.engine: unknown engine {policy.engine!r}; known: {', '.join(list_engines())}")
    if policy.base_urls and policy.engine not in ("openai", "fleet"):
        raise ConfigError(f"policy.base_urls is only read by the openai and fleet engines (policy.engine is {policy.engine!r})")
    if policy.per_server_concurrency != PolicyConfig.per_server_concurrency and policy.engine != "fleet":
        raise ConfigError(f"policy.per_server_concurrency is only read by the fleet engine (policy.engine is {policy.engine!r})")
    if policy.engine == "fleet":
        spec = EngineSpec("fleet", policy.model, fleet_engine_kwargs(config, trains=trains))
        return spec, policy_precision(config, started_in) if trains else None
    if policy.engine == "openai":
        refuse_vllm_settings(config)
        if trains:
            raise ConfigError(f"policy.engine: the openai engine cannot train; method {config.method!r} trains (use hf or vllm)")
        if not policy.base_urls:
            raise ConfigError("policy.base_urls: the openai engine needs at least one server URL")
        for key in ("dtype", "device"):
            if getattr(policy, key) != "auto":
                raise ConfigError(f"policy.{key}: the openai engine's servers choose their own {key}")
        return EngineSpec("openai", policy.model, {"base_urls": list(policy.base_urls)}), None
    precision = policy_precision(config, started_in)
    if policy.engine != "vllm":
        refuse_vllm_settings(config)
    if policy.engine == "hf":
        if config.rl.keep_adapters != TrainerConfig.keep_adapters:
            raise ConfigError("rl.keep_adapters is not read with the hf engine: it samples from the trainer's own weights "
                              "and publishes no adapter folders")
        return EngineSpec("hf", policy.model, {"dtype": precision.dtype, "device": precision.device}), precision
    if policy.device != "auto" and not trains:  # it would place only the trainer's model
        raise ConfigError(f"policy.device: the {policy.engine} engine places itself (vLLM: CUDA_VISIBLE_DEVICES), and "
                          f"method {config.method!r} trains no model here")
    if policy.engine == "vllm":
        gpu_shared = trains or config.evolution.reflector.engine not in ("policy", "openai")
        settings = vllm_engine_kwargs(config, trains=trains, gpu_shared=gpu_shared)
        return EngineSpec("vllm", policy.model, {"dtype": precision.dtype, "seed": config.seed, **settings}), precision
    return EngineSpec(policy.engine, policy.model, {"dtype": precision.dtype}), precision


def rollout_config(config: RunConfig, temperature: float) -> RolloutConfig:
    """How episodes are sampled (training and evaluation differ in the temperature only)."""
    policy = config.policy
    sampling = SamplingParams(temperature=temperature, top_p=policy.top_p, max_tokens=policy.max_tokens)
    return RolloutConfig(sampling=sampling, placement=policy.placement, max_total_tokens=policy.max_total_tokens,  # type: ignore[arg-type]
                         constrain_actions=policy.constrain_actions)


# -- trainer ---------------------------------------------------------------------------------------


def _trainer(config: RunConfig) -> TrainerConfig:
    """The trainer's settings; its temperature is the policy's sampling temperature, and Dr.
    GRPO's constant normaliser (`rl.norm_tokens`, unset) is the generation budget per turn,
    `policy.max_tokens`: the constant of Dr. GRPO's reference code, the same in every step,
    where the longest sequence of a step would make the scale vary from step to step. (A
    multi-turn episode may hold more policy tokens than one turn's budget; any constant keeps
    the relative weights of sequences, which is what Dr. GRPO fixes.)"""
    from espl.rl.advantages import ADVANTAGE_MODES
    from espl.rl.losses import make_loss

    rl = config.rl
    if rl.temperature != TrainerConfig.temperature:
        raise ConfigError("rl.temperature is the sampling temperature the logprobs come from: set policy.temperature")
    _check_kl(rl.kl)
    _check_fsdp(config)
    if rl.keep_adapters < 0:
        raise ConfigError(f"rl.keep_adapters must be at least 0 (0 keeps every one), got {rl.keep_adapters}")
    for key in ("mini_batches", "epochs"):
        if getattr(rl, key) < 1:
            raise ConfigError(f"rl.{key} must be at least 1, got {getattr(rl, key)}")
    if rl.old_logprobs != "recompute" and rl.tis_cap != TrainerConfig.tis_cap:
        raise ConfigError("rl.tis_cap is only read with rl.old_logprobs=\"recompute\"")
    if not rl.tis_cap >= 1.0:
        raise ConfigError(f"rl.tis_cap must be at least 1, got {rl.tis_cap}")
    options = dict(rl.loss_options)
    if rl.kl.kind != "none":
        options.setdefault("kl_coef", rl.kl.coef)
    try:
        loss = make_loss(rl.loss, **options)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"rl.loss / rl.loss_options: {error}") from None
    if getattr(loss, "requires_kl", False) and rl.kl.kind == "none":
        raise ConfigError(f"rl.kl.kind: loss {rl.loss!r} needs a KL term (set rl.kl.kind to k3 or topk)")
    if rl.advantage_mode is not None and rl.advantage_mode not in ADVANTAGE_MODES:
        raise ConfigError(f"rl.advantage_mode must be one of {', '.join(ADVANTAGE_MODES)} (or unset), got {rl.advantage_mode!r}")
    norm_tokens = rl.norm_tokens
    if loss.aggregation == "seq_mean_token_sum_norm":
        if norm_tokens is not None and norm_tokens < 1:
            raise ConfigError(f"rl.norm_tokens must be at least 1, got {norm_tokens}")
        norm_tokens = norm_tokens or config.policy.max_tokens
    elif norm_tokens is not None:
        raise ConfigError(f"rl.norm_tokens is only read by the seq_mean_token_sum_norm aggregation (loss {rl.loss!r} "
                          f"aggregates {loss.aggregation})")
    return replace(rl, temperature=config.policy.temperature, norm_tokens=norm_tokens)


def _check_fsdp(config: RunConfig) -> None:
    """A sharded base (`rl.fsdp`) holds a slice of the model on each rank: nothing in process may
    generate with it, nor load the whole model next to it."""
    if not config.rl.fsdp:
        return
    if config.policy.engine == "hf":
        raise ConfigError("rl.fsdp: the hf engine samples from the trainer's model, which rl.fsdp shards over the ranks; "
                          "sample on an engine with its own weights (policy.engine = vllm or fleet)")
    if config.evolution.reflector.engine == "hf":
        raise ConfigError("rl.fsdp: an hf reflector loads the whole model on rank 0, which rl.fsdp exists to avoid; "
                          "use evolution.reflector.engine = policy, vllm or openai")


def _check_kl(kl: KLSettings) -> None:
    """Settings of a KL kind that is not in use would be silently ignored: refuse them."""
    defaults = KLSettings()
    anchor = {"ema_eta", "ema_period", "ema_period_unit", "anchor"}  # the EMA anchor of the top-k KL
    used = {"none": set(), "k3": {"coef"}, "topk": {"coef", "topk", "form", *anchor}}[kl.kind]
    for f in fields(KLSettings):
        if f.name != "kind" and f.name not in used and getattr(kl, f.name) != getattr(defaults, f.name):
            raise ConfigError(f"rl.kl.{f.name} is not read with rl.kl.kind={kl.kind!r}")


# -- evolution --------------------------------------------------------------------------------------


def _selection(config: RunConfig) -> tuple[str, dict[str, Any]]:
    from espl.evolution.selection import make_strategy

    evolution = config.evolution
    try:
        make_strategy(evolution.selection, **evolution.selection_options)
    except ValueError as error:
        raise ConfigError(f"evolution.selection / selection_options: {error}") from None
    return evolution.selection, dict(evolution.selection_options)


MUTATION_KEYS = ("reflect_on_failures", "max_problems", "max_rollouts_per_problem", "verbatim_words")
"""Mutation settings with their own `evolution.*` key (not repeated in operator_options.mutation)."""


def operator_specs(config: RunConfig, names: Any) -> tuple[OperatorSpec, ...]:
    """Each operator's options and probability (crossover's is `evolution.crossover_probability`)."""
    from espl.evolution.operators import make_operator

    evolution = config.evolution
    stray = sorted(set(evolution.operator_options) - set(evolution.operators))
    if stray:
        raise ConfigError(f"evolution.operator_options: {', '.join(stray)} not in evolution.operators")
    specs = []
    for name in names:
        options = dict(evolution.operator_options.get(name, {}))
        probability = float(options.pop("probability", 1.0))
        if name == "crossover":
            if "probability" in evolution.operator_options.get(name, {}):
                raise ConfigError("evolution.operator_options.crossover.probability: set evolution.crossover_probability")
            probability = evolution.crossover_probability
        if name == "mutation":
            doubled = sorted(set(options) & set(MUTATION_KEYS))
            if doubled:
                raise ConfigError(f"evolution.operator_options.mutation.{doubled[0]}: set evolution.{doubled[0]}")
            options = {key: getattr(evolution, key) for key in MUTATION_KEYS} | options
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"evolution.operator_options.{name}.probability must be in [0, 1], got {probability}")
        try:
            make_operator(name, **options)
        except ValueError as error:
            raise ConfigError(f"evolution.operators: {error}") from None
        specs.append(OperatorSpec(name, options, probability))
    return tuple(specs)


def _evolver(config: RunConfig) -> dict[str, Any]:
    evolution = config.evolution
    stray = sorted(set(evolution.children_order) - set(evolution.operators))
    if stray:
        raise ConfigError(f"evolution.children_order names {', '.join(stray)}, not in evolution.operators")
    return {"children_order": tuple(evolution.children_order), "duplicate_scores": evolution.duplicate_scores}


def _reflector(config: RunConfig, started_in: Precision | None, *, trains: bool) -> EngineSpec | None:
    from agents.engines import list_engines

    reflector = config.evolution.reflector
    if reflector.api != "chat" and reflector.engine != "openai":
        raise ConfigError("evolution.reflector.api is only read by the openai engine")
    if reflector.engine == "policy":
        for key in ("model", "base_urls"):
            if getattr(reflector, key):
                raise ConfigError(f"evolution.reflector.{key} is not read when the reflector is the policy's engine")
        return None
    if reflector.engine not in list_engines():
        raise ConfigError(f"evolution.reflector.engine: unknown engine {reflector.engine!r}; known: policy, {', '.join(list_engines())}")
    if reflector.base_urls and reflector.engine != "openai":
        raise ConfigError(f"evolution.reflector.base_urls is only read by the openai engine")
    return EngineSpec(reflector.engine, reflector.model, _reflector_engine_kwargs(config, started_in, trains=trains))


def _reflector_engine_kwargs(config: RunConfig, started_in: Precision | None, *, trains: bool) -> dict[str, Any]:
    """A reflector engine of its own runs where the policy does: an in-process one takes the
    policy's device and dtype (and, for vLLM, its `policy.vllm` placement), so a GPU run does
    not reflect on the CPU in float32."""
    reflector = config.evolution.reflector
    if reflector.engine == "openai":
        return {"base_urls": list(reflector.base_urls), "mode": reflector.api}
    if reflector.engine not in ("hf", "vllm"):
        return {}
    precision = policy_precision(config, started_in)
    if reflector.engine == "hf":
        return {"dtype": precision.dtype, "device": precision.device}
    return {"dtype": precision.dtype, "seed": config.seed, **reflector_vllm_kwargs(config, trains=trains)}


def reflector_sampling(config: RunConfig) -> SamplingParams:
    reflector = config.evolution.reflector
    return SamplingParams(temperature=reflector.temperature, top_p=0.95, max_tokens=reflector.max_tokens,
                          seed=config.seed, logprobs=False)

