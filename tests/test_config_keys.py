"""Every `RunConfig` key either changes the run that is built or is refused with its name.

The run is built from its plan alone (`espl.run.plan`), so a key whose new value leaves the
plan unchanged would be silently ignored. The walk covers every leaf of the dataclass tree,
so a key added later is covered too: it needs a generic alternative value (numbers, booleans)
or an entry in `ALTERNATIVES`.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from espl.config import ConfigError, RunConfig, load_config
from espl.run.plan import plan_run

OTHER_DEVICE = "cpu" if torch.cuda.is_available() else "cuda"
"""Not what `auto` resolves to here: the CPU where a GPU is seen, else a GPU (refused by name)."""

BASE = {"method": "espl", "env.name": "hotpotqa"}
"""The fullest run: RL and evolution, on an env that searches."""

ALTERNATIVES: dict[str, tuple[Any, dict[str, Any]]] = {
    # key: (new value, context it needs to be read at all)
    "method": ("rl", {}),
    "env.name": ("gsm8k", {}),
    "env.train_split": ("test", {}),
    "env.test_split": ("train", {}),
    "env.retriever_url": ("http://127.0.0.1:9", {}),
    "env.kwargs": ({"max_searches": 2}, {}),
    "policy.model": ("tiny-random", {}),
    "policy.engine": ("vllm", {}),
    "policy.dtype": ("float16", {}),  # never what auto picks, on any machine
    "policy.device": (OTHER_DEVICE, {}),
    "policy.base_urls": (["http://127.0.0.1:9"], {"policy.engine": "openai", "method": "evolution",
                                                   "policy.base_urls": ["http://127.0.0.1:8"]}),
    "policy.per_server_concurrency": (4, {"policy.engine": "fleet", "policy.base_urls": ["http://127.0.0.1:9"]}),
    "policy.placement": ("user", {}),
    "policy.top_p": (0.9, {}),
    "policy.vllm.tensor_parallel_size": (2, {"policy.engine": "vllm"}),
    "policy.vllm.gpu_memory_utilization": (0.8, {"policy.engine": "vllm"}),
    "policy.vllm.max_model_len": (20000, {"policy.engine": "vllm"}),
    "policy.vllm.enforce_eager": (True, {"policy.engine": "vllm"}),
    "policy.vllm.sleep_mode": ("on", {"policy.engine": "vllm"}),
    "rl.keep_adapters": (5, {"policy.engine": "vllm"}),
    "rl.loss": ("grpo", {}),
    "rl.loss_options": ({"aggregation": "token_mean"}, {}),
    "rl.advantage_mode": ("grpo", {}),
    "rl.betas": ([0.8, 0.9], {}),
    "rl.lora.target_modules": (["q_proj"], {}),
    "rl.kl.kind": ("k3", {}),
    "rl.kl.coef": (0.01, {"rl.kl.kind": "k3"}),
    "rl.kl.topk": (8, {"rl.kl.kind": "topk"}),
    "rl.kl.form": ("paper", {"rl.kl.kind": "topk"}),
    "rl.kl.ema_eta": (0.5, {"rl.kl.kind": "topk"}),
    "rl.kl.ema_period": (3, {"rl.kl.kind": "topk"}),
    "rl.norm_tokens": (512, {"rl.loss": "dr_grpo"}),
    "rl.old_logprobs": ("recompute", {}),
    "rl.kl.anchor": ("exact", {"rl.kl.kind": "topk"}),
    "rl.kl.ema_period_unit": ("batch", {"rl.kl.kind": "topk"}),
    "evolution.selection": ("lucb", {}),
    "evolution.selection_options": ({"k": 3.0}, {"evolution.selection": "lucb"}),
    "evolution.eval_prompt": ("newest", {}),
    "evolution.operators": (["mutation"], {}),
    "evolution.operator_options": ({"mutation": {"max_edits_per_problem": 1}}, {}),
    "evolution.initial_principles": ([], {}),
    "evolution.reflector.engine": ("hf", {}),
    "evolution.reflector.model": ("tiny-random", {"evolution.reflector.engine": "hf"}),
    "evolution.reflector.base_urls": (["http://127.0.0.1:9"], {"evolution.reflector.engine": "openai"}),
    "evolution.reflector.api": ("completions", {"evolution.reflector.engine": "openai",
                                                "evolution.reflector.base_urls": ["http://127.0.0.1:9"]}),
    "evolution.children_order": (["crossover", "mutation"], {}),
    "evolution.duplicate_scores": ("max", {}),
    "report_to": (["tensorboard"], {}),
}


def leaf_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, type hint, default) of every leaf setting."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()  # type: ignore[misc]
        if dataclasses.is_dataclass(hint):
            out += leaf_keys(hint, f"{prefix}{field.name}.")
        else:
            out.append((prefix + field.name, hint, default))
    return out


def alternative(key: str, hint: Any, default: Any) -> tuple[Any, dict[str, Any]]:
    if key in ALTERNATIVES:
        return ALTERNATIVES[key]
    if isinstance(default, bool):
        return not default, {}
    if isinstance(default, int):
        return default + 1, {}
    if isinstance(default, float):
        return default * 2 if default else 0.5, {}
    if default is None and int in typing.get_args(hint):
        return 3, {}
    raise AssertionError(f"no alternative value for {key} ({hint}): add it to ALTERNATIVES")


def plan(settings: dict[str, Any]):
    nested: dict[str, Any] = {}
    for dotted, value in settings.items():
        *sections, leaf = dotted.split(".")
        node = nested
        for section in sections:
            node = node.setdefault(section, {})
        node[leaf] = value
    return plan_run(load_config(None, base=nested))


@pytest.mark.parametrize(("key", "hint", "default"), leaf_keys(), ids=[k for k, _, _ in leaf_keys()])
def test_a_key_changes_the_run_or_is_refused_by_name(key: str, hint: Any, default: Any) -> None:
    value, context = alternative(key, hint, default)
    assert value != default, f"the alternative of {key} is its default"
    before = plan({**BASE, **context})
    try:
        after = plan({**BASE, **context, key: value})
    except ConfigError as error:
        assert key in str(error), f"{key}={value!r} was refused without naming the key: {error}"
        return
    assert after != before, f"{key}={value!r} left the run unchanged (a silently ignored setting)"


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"rl.temperature": 0.5}, "rl.temperature"),
        ({"rl.kl.coef": 0.01}, "rl.kl.coef"),
        ({"rl.loss": "ema_pg"}, "rl.kl.kind"),
        ({"policy.engine": "openai", "policy.base_urls": ["http://x"]}, "policy.engine"),
        ({"policy.base_urls": ["http://x"]}, "policy.base_urls"),
        ({"evolution.reflector.model": "tiny-random"}, "evolution.reflector.model"),
        ({"evolution.operator_options": {"crossover": {"probability": 0.5}}}, "crossover_probability"),
        ({"evolution.operator_options": {"mutation": {"max_problems": 2}}}, "evolution.max_problems"),
        ({"evolution.operator_options": {"mutation": {"no_such_option": 2}}}, "no_such_option"),
        ({"evolution.selection_options": {"tempr": 2}}, "selection_options"),
        ({"env.kwargs": {"no_such_kwarg": 1}}, "env.kwargs"),
        ({"env.name": "gsm8k", "env.retriever_url": "http://x"}, "env.retriever_url"),
        ({"samples_per_problem": 0}, "samples_per_problem"),
        ({"policy.max_total_tokens": 16, "policy.max_tokens": 32}, "policy.max_total_tokens"),
        ({"policy.device": "tpu"}, "policy.device"),
        ({"policy.device": "cuda:99"}, "policy.device"),
        ({"policy.engine": "openai", "method": "evolution", "policy.base_urls": ["http://x"], "policy.device": "cpu"},
         "policy.device"),
        ({"policy.engine": "vllm", "method": "evolution", "policy.device": "cpu"}, "policy.device"),
        ({"policy.engine": "vllm", "policy.vllm.max_model_len": 1024, "policy.max_total_tokens": 2048},
         "policy.vllm.max_model_len"),
        ({"policy.engine": "vllm", "rl.lora.rank": 1024}, "rl.lora.rank"),
        ({"policy.vllm.tensor_parallel_size": 2}, "policy.vllm.tensor_parallel_size"),
        ({"rl.keep_adapters": 1}, "rl.keep_adapters"),
        ({"policy.engine": "vllm", "method": "evolution", "policy.vllm.sleep_mode": "on"}, "policy.vllm.sleep_mode"),
    ],
)
def test_cross_checks_refuse_before_anything_loads(settings: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan({**BASE, **settings})


def test_presets_and_suites_plan_for_every_method() -> None:
    from espl.methods import method_names
    from espl.suite import expand, load_suite

    for preset in ("smoke", "default", "paper"):
        for method in method_names():
            plan_run(load_config(preset, [f'method="{method}"']))
    for suite in ("math-cpu", "hotpotqa-cpu"):
        for spec in expand(load_suite(suite)):
            plan_run(spec.config)


@pytest.mark.parametrize(
    ("flags", "key"),
    [
        (["--env", "gsm8kk"], "env.name"),
        (["--set", "rl.loss=grpoo"], "rl.loss"),
        (["--set", "evolution.selection=lucbb"], "evolution.selection"),
        (["--set", 'evolution.operators=["mutation", "mutt"]'], "evolution.operators"),
        (["--method", "espll"], "method"),
        (["--report-to", "tensorbord"], "report_to"),
    ],
)
def test_dry_run_refuses_unknown_names_in_one_line_and_leaves_no_directory(
    flags: list[str], key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from espl.cli import main

    out = tmp_path / "run"
    code = main(["run", "--env", "gsm8k", *flags, "--dry-run", "--out", str(out)])
    printed = capsys.readouterr()
    lines = [line for line in (printed.out + printed.err).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and key in lines[0], lines
    assert not out.exists() and not any(tmp_path.iterdir())
