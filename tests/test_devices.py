"""Device and precision: `policy.device` and `policy.dtype = "auto"` resolved from the machine,
GPUs that are not there refused before a model loads, fp32 adapters on a bf16 base, and the
resolved values in every run's summary."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from agents import devices
from agents.devices import DeviceError, auto_dtype, cpu_flags, cpu_model_name, resolve_device, resolve_precision

INTEL_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8
"""
INTEL_AVX512_BF16 = """model name\t: Intel(R) Xeon(R) Gold 6348
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni
"""
AMD_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7R13 Processor
flags\t\t: fpu sse2 avx avx2 fma bmi2 sha_ni
processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma bmi2 sha_ni
"""


# -- dtype from the CPU's flags ------------------------------------------------------------------


@pytest.mark.parametrize(("cpuinfo", "dtype", "flag"), [
    (INTEL_AMX, "bfloat16", "amx_bf16"),
    (INTEL_AVX512_BF16, "bfloat16", "avx512_bf16"),
    (AMD_AVX2, "float32", None),
    ("", "float32", None),
])
def test_auto_dtype_follows_the_cpus_bf16_units(cpuinfo: str, dtype: str, flag: str | None) -> None:
    chosen, reason = auto_dtype("cpu", cpu_flags(cpuinfo))
    assert chosen == dtype
    if flag:
        assert reason == f"cpu has {flag}"
    else:
        assert "amx_bf16" in reason or "unknown" in reason
    assert auto_dtype("cuda:0", cpu_flags(cpuinfo))[0] == "bfloat16"  # a GPU does not ask the CPU


def test_cpuinfo_parsing() -> None:
    assert cpu_flags(AMD_AVX2) == {"fpu", "sse2", "avx", "avx2", "fma", "bmi2", "sha_ni"}
    assert cpu_model_name(INTEL_AMX) == "Intel(R) Xeon(R) Platinum 8480+"
    assert cpu_flags("no flags here") == frozenset() and cpu_model_name("") == ""


def test_resolve_precision_with_another_machines_cpuinfo() -> None:
    amx = resolve_precision("cpu", "auto", cpuinfo=INTEL_AMX)
    amd = resolve_precision("cpu", "auto", cpuinfo=AMD_AVX2)
    assert (amx.dtype, amx.reason, amx.device_name) == ("bfloat16", "cpu has amx_bf16", "Intel(R) Xeon(R) Platinum 8480+")
    assert (amd.dtype, amd.device, amd.device_name) == ("float32", "cpu", "AMD EPYC 7R13 Processor")
    pinned = resolve_precision("cpu", "float32", cpuinfo=INTEL_AMX)
    assert (pinned.dtype, pinned.reason) == ("float32", "set by policy.dtype")


def test_this_hosts_cpuinfo_decides_auto() -> None:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    native = {"amx_bf16", "avx512_bf16"} & cpu_flags(text)
    precision = resolve_precision("cpu", "auto")
    assert precision.dtype == ("bfloat16" if native else "float32")
    assert precision.device == "cpu"
    if text:
        assert precision.device_name == cpu_model_name(text)


def test_a_missing_cpuinfo_means_float32(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(devices, "CPUINFO", tmp_path / "absent")
    devices.host_cpuinfo.cache_clear()
    try:
        precision = resolve_precision("cpu", "auto")
        assert precision.dtype == "float32" and "unknown" in precision.reason
    finally:
        devices.host_cpuinfo.cache_clear()


# -- the device ----------------------------------------------------------------------------------


def test_auto_and_cpu_on_this_machine() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'gpu'"):
        resolve_device("gpu")


def test_a_gpu_that_is_not_there_is_refused_clearly() -> None:
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last GPU torch sees, on any machine
    with pytest.raises(DeviceError) as caught:
        resolve_device(missing)
    message = str(caught.value)
    assert repr(missing) in message and torch.__version__ in message and "CUDA build of torch" in message
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine with two GPUs, as torch would report it (this one may have none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"NVIDIA H200 ({device})")


def test_with_gpus_auto_takes_one_in_bf16_and_indexes_are_checked(two_gpus: None) -> None:
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(DeviceError, match=r"'cuda:2'.*2 CUDA device\(s\) \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")
    precision = resolve_precision("auto", "auto", cpuinfo=AMD_AVX2)
    assert (precision.device, precision.dtype) == ("cuda", "bfloat16")
    assert precision.device_name.startswith("NVIDIA H200")
    assert "NVIDIA H200" in precision.describe()


def test_the_plan_refuses_a_missing_gpu_and_the_cli_makes_no_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from espl.cli import main
    from espl.config import ConfigError, load_config
    from espl.run.plan import plan_run

    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ConfigError, match=r"^policy\.device: '" + missing):
        plan_run(load_config("smoke", [f'policy.device="{missing}"', 'policy.model="tiny-random"']))
    out = tmp_path / "run"
    code = main(["run", "--env", "gsm8k", "--preset", "smoke", "--model", "tiny-random", "--set",
                 f'policy.device="{missing}"', "--out", str(out)])
    assert code == 2 and "policy.device" in capsys.readouterr().out
    assert not out.exists()


def test_the_plan_places_the_hf_engine_and_resolves_auto() -> None:
    from espl.config import load_config
    from espl.run.plan import plan_run

    plan = plan_run(load_config("smoke", ['policy.dtype="auto"', 'policy.device="cpu"']))
    assert plan.precision == resolve_precision("cpu", "auto")
    assert plan.engine.kwargs == {"dtype": plan.precision.dtype, "device": "cpu"}
    assert plan_run(load_config("smoke")).precision.dtype == "float32"  # the tests' preset is pinned


# -- a bf16 base under a float32 adapter --------------------------------------------------------------


@pytest.mark.slow
def test_a_bf16_base_trains_float32_adapters_with_float32_adam_state(tmp_path: Path) -> None:
    from agents import models
    from agents.engine import SamplingParams
    from agents.engines.hf import HFEngine
    from agents.trajectory import Trajectory
    from espl.rl.lora import POLICY, adapter_tensors
    from espl.rl.settings import LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    model = models.load_model("tiny-random", dtype="bfloat16")
    config = TrainerConfig(lora=LoraSettings(rank=4, alpha=8), lr=1e-2, micro_batch_size=8)
    trainer = LoRATrainer(model, config, publish_dir=str(tmp_path / "adapters"))
    adapters = adapter_tensors(trainer.model, POLICY)
    before = {name: tensor.detach().clone() for name, tensor in adapters.items()}
    assert all(tensor.dtype == torch.float32 for tensor in adapters.values())
    base = [p for n, p in trainer.model.named_parameters() if "lora_" not in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)

    rng = random.Random(0)
    trajectories, keys = [], []
    for i in range(4):
        trajectory = Trajectory("synthetic", "task0", "p0", i)
        trajectory.append_prompt([rng.randrange(100, 5000) for _ in range(6)])
        sampled = [rng.randrange(100, 5000) for _ in range(5)]
        trajectory.append_sampled(sampled, [-1.0] * len(sampled))
        trajectory.reward = float(i % 2)
        trajectories.append(trajectory)
        keys.append(("p0", "task0"))
    stats = trainer.step(trajectories, keys)

    assert trainer.optimizer_steps == 1 and "skipped" not in stats
    assert any(not torch.equal(before[name], tensor) for name, tensor in adapters.items())
    state = [s for group in trainer.optimizer.param_groups for p in group["params"] if (s := trainer.optimizer.state.get(p))]
    assert state and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in state)
    assert all(p.dtype == torch.bfloat16 for p in base)

    engine = HFEngine(trainer.model, tokenizer=models.load_tokenizer("tiny-random"))
    [[completion]] = engine.generate([[1, 2, 3, 4]], SamplingParams(max_tokens=6, seed=0), trainer.adapter())
    assert completion.ok and completion.token_ids and all(lp <= 0.0 for lp in completion.logprobs)


def test_the_bf16_autocast_flag_still_steps_on_a_bf16_base() -> None:
    from agents import models
    from agents.trajectory import Trajectory
    from espl.rl.settings import LoraSettings, TrainerConfig
    from espl.rl.trainer import LoRATrainer

    model = models.load_model("tiny-random", dtype="bfloat16")
    trainer = LoRATrainer(model, TrainerConfig(lora=LoraSettings(rank=4, alpha=8), bf16=True))
    trajectories = []
    for i in range(2):
        trajectory = Trajectory("synthetic", "task0", "p0", i)
        trajectory.append_prompt([10, 20, 30])
        trajectory.append_sampled([40, 50], [-1.0, -1.0])
        trajectory.reward = float(i)
        trajectories.append(trajectory)
    stats = trainer.step(trajectories, [("p0", "task0")] * 2)
    assert trainer.optimizer_steps == 1 and torch.isfinite(torch.tensor(stats["loss"]))


# -- what a run says and records ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_run_prints_and_records_its_precision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from espl.cli import main

    out = tmp_path / "run"
    code = main(["run", "--env", "gsm8k", "--method", "rl", "--preset", "smoke", "--model", "tiny-random", "--quiet",
                 "--set", 'policy.dtype="auto"', "--set", "policy.max_tokens=8", "--set", "eval_limit=1",
                 "--out", str(out)])  # short replies: the check is what the run says and records, not what it writes
    printed = capsys.readouterr().out
    assert code == 0, printed
    expected = resolve_precision("auto", "auto")
    lines = [line for line in printed.splitlines() if line.startswith("policy model:")]
    assert lines == [f"policy model: {expected.describe()}"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["precision"] == expected.to_dict()
