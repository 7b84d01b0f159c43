"""A resumed run keeps the precision it started in where `policy.device`/`policy.dtype` are
"auto" (`espl.run.kept_precision`): another CPU is simulated by its /proc/cpuinfo text, a GPU
by what torch reports; the config checks run before any model loads, the real runs at the end."""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from agents import devices
from agents.devices import DeviceError, Precision, resolve_precision
from espl.cli import main
from espl.config import ConfigError, load_config
from espl.files.atomic import readable_directory
from espl.rl.distributed import DistributedContext
from espl.run.context import LoopState
from espl.run.kept_precision import keep_precision, plan_kept_run, resume_note
from espl.run.plan import plan_run
from espl.run.resume import RunDirError, checkpoint_state
from espl.run.run_dir import RunDir
from tests.test_devices import AMD_AVX2, INTEL_AMX

AUTO = ['policy.model="tiny-random"', 'env.name="gsm8k"', 'policy.dtype="auto"']
AMX_START = resolve_precision("cpu", "auto", cpuinfo=INTEL_AMX)
AMD_START = resolve_precision("cpu", "auto", cpuinfo=AMD_AVX2)
CUDA_START = Precision("cuda", "bfloat16", "a GPU computes in bf16 natively", "NVIDIA H200")

Machine = Callable[..., None]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    """`machine(cpuinfo, gpus=0)`: what `agents.devices` sees from here on in the test."""

    def become(cpuinfo: str, gpus: int = 0) -> None:
        monkeypatch.setattr(devices, "host_cpuinfo", lambda: cpuinfo)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")

    return become


def config(*overrides: str):
    return load_config("smoke", [*AUTO, *overrides])


def fake_checkpoint(run_dir: Path, settings, precision: Precision | None, *, recorded: bool = True) -> Path:
    """A run directory after one iteration, as far as the checks before any model read it;
    `recorded=False`: a checkpoint from before runs recorded their precision."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(settings.to_dict()))
    (run_dir / "checkpoint").mkdir()
    state = LoopState(iteration=1, precision=precision).to_dict()
    if not recorded:
        del state["precision"]
    (run_dir / "checkpoint" / "loop.json").write_text(json.dumps(state))
    return run_dir


# -- what a resume keeps ---------------------------------------------------------------------------


def test_auto_dtype_keeps_the_dtype_the_run_started_with_on_another_cpu(machine: Machine) -> None:
    machine(AMD_AVX2)
    assert (AMX_START.dtype, AMD_START.dtype) == ("bfloat16", "float32")  # what auto picks on each
    kept = keep_precision("auto", "auto", AMX_START)
    assert (kept.device, kept.dtype) == ("cpu", "bfloat16")
    assert kept.reason == "kept from the run's start (cpu has amx_bf16)"
    assert kept.device_name == "AMD EPYC 7R13 Processor"  # where it runs now
    note = resume_note(config().policy, AMX_START, kept)
    assert note == ("policy.dtype auto: keeping bfloat16, which the run started with "
                    "(auto would pick float32 on this machine)")
    machine(INTEL_AMX)
    back = keep_precision("auto", "auto", AMD_START)
    assert back.dtype == "float32" and "kept from the run's start" in back.reason
    assert "keeping float32" in resume_note(config().policy, AMD_START, back)


def test_on_the_machine_it_started_on_nothing_changes_and_nothing_is_said(machine: Machine) -> None:
    machine(INTEL_AMX)
    kept = keep_precision("auto", "auto", AMX_START)
    assert kept == resolve_precision("auto", "auto")
    assert resume_note(config().policy, AMX_START, kept) is None


def test_explicit_settings_are_resolved_as_for_a_new_run(machine: Machine) -> None:
    machine(AMD_AVX2)
    explicit = keep_precision("cpu", "float16", AMX_START)
    assert (explicit.dtype, explicit.reason) == ("float16", "set by policy.dtype")
    assert keep_precision("cpu", "auto", AMX_START).dtype == "bfloat16"  # the dtype alone is auto: kept
    pinned = config('policy.dtype="float32"', 'policy.device="cpu"')
    assert resume_note(pinned.policy, AMX_START, keep_precision("cpu", "float32", AMX_START)) is None


def test_a_cpu_run_stays_on_the_cpu_where_a_gpu_has_appeared(machine: Machine) -> None:
    machine(AMD_AVX2, gpus=1)
    assert resolve_precision("auto", "auto").device == "cuda"  # what a new run would take
    kept = keep_precision("auto", "auto", AMX_START)
    assert (kept.device, kept.dtype) == ("cpu", "bfloat16")
    note = resume_note(config().policy, AMX_START, kept)
    assert note is not None and note.startswith("policy.device auto: keeping cpu, which the run started on "
                                                "(auto would pick cuda on this machine); policy.dtype auto: keeping bfloat16")


def test_a_cuda_run_goes_on_on_a_gpu_and_is_refused_without_one(machine: Machine) -> None:
    machine(AMD_AVX2, gpus=2)
    kept = keep_precision("auto", "auto", CUDA_START)
    assert (kept.device, kept.dtype) == ("cuda", "bfloat16")
    machine(AMD_AVX2)
    with pytest.raises(DeviceError, match="started on cuda .*resume it on a machine with a GPU"):
        keep_precision("auto", "auto", CUDA_START)
    with pytest.raises(ConfigError, match=r"^policy\.device: auto, and this run started on cuda"):
        plan_run(config(), started_in=CUDA_START)


# -- the plan, from the run directory ---------------------------------------------------------------


def test_the_plan_of_a_resumed_run_uses_the_recorded_dtype_everywhere(machine: Machine, tmp_path: Path) -> None:
    settings = config('evolution.reflector.engine="hf"')
    run_dir = fake_checkpoint(tmp_path / "run", settings, AMX_START)
    machine(AMD_AVX2)
    plan, note = plan_kept_run(settings, RunDir(run_dir))
    assert plan.precision is not None and plan.precision.dtype == "bfloat16"
    assert plan.engine.kwargs["dtype"] == "bfloat16" and plan.reflector is not None
    assert plan.reflector.kwargs["dtype"] == "bfloat16"  # a reflector of its own runs as the policy does
    assert note is not None and "keeping bfloat16" in note
    assert plan_run(settings).precision.dtype == "float32"  # a new run here would differ


def test_a_run_without_a_checkpoint_resolves_here_and_says_nothing(machine: Machine, tmp_path: Path) -> None:
    settings = config()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps(settings.to_dict()))
    machine(AMD_AVX2)
    plan, note = plan_kept_run(settings, RunDir(run_dir))
    assert plan.precision.dtype == "float32" and note is None
    assert plan_kept_run(settings, None)[1] is None


def test_a_checkpoint_from_before_the_record_resumes_as_before_with_a_note(machine: Machine, tmp_path: Path) -> None:
    settings = config()
    run_dir = fake_checkpoint(tmp_path / "run", settings, None, recorded=False)
    machine(AMD_AVX2)
    plan, note = plan_kept_run(settings, RunDir(run_dir))
    assert plan.precision == resolve_precision("auto", "auto")  # as before this record existed
    assert note is not None and "records no precision" in note and "float32 on cpu" in note
    assert "\n" not in note


def test_the_record_is_json_in_the_loop_state_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    state = LoopState(iteration=2, precision=AMX_START)
    data = json.loads(json.dumps(state.to_dict()))
    assert data["precision"] == {"device": "cpu", "dtype": "bfloat16", "reason": "cpu has amx_bf16",
                                 "device_name": "Intel(R) Xeon(R) Platinum 8480+"}
    assert LoopState.from_dict(data).precision == AMX_START
    run_dir = fake_checkpoint(tmp_path / "run", config(), AMX_START)
    loop = run_dir / "checkpoint" / "loop.json"
    assert checkpoint_state(RunDir(run_dir)).precision == AMX_START
    for bad in ({**data["precision"], "dtype": "int8"}, {**data["precision"], "device": "auto"}, "bfloat16"):
        loop.write_text(json.dumps({**data, "precision": bad}))
        with pytest.raises(RunDirError, match="unreadable loop state"):
            checkpoint_state(RunDir(run_dir))


def test_the_cli_refuses_a_cuda_run_on_a_machine_without_a_gpu(
    machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = fake_checkpoint(tmp_path / "run", config(), CUDA_START)
    machine(INTEL_AMX)
    before = sorted(p.name for p in run_dir.rglob("*"))
    for extra in ([], ["--iterations", "3"]):
        assert main(["run", "--resume", str(run_dir), "--quiet", *extra]) == 2
        out = capsys.readouterr().out
        assert "started on cuda (NVIDIA H200)" in out and "resume it on a machine with a GPU" in out
        assert len(out.strip().splitlines()) == 1
    assert sorted(p.name for p in run_dir.rglob("*")) == before  # refused before anything was written


# -- real runs ---------------------------------------------------------------------------------------

RUN = ["--env", "gsm8k", "--method", "rl", "--preset", "smoke", "--model", "tiny-random", "--quiet",
       "--set", 'policy.dtype="auto"', "--set", "problems_per_iteration=1", "--set", "eval_every=0"]


@pytest.fixture(scope="module")
def amx_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A one-iteration rl run with dtype auto, started on a (simulated) CPU with AMX."""
    out = tmp_path_factory.mktemp("amx") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(devices, "host_cpuinfo", lambda: INTEL_AMX)
        patch.setattr(torch.cuda, "is_available", lambda: False)
        assert main(["run", *RUN, "--iterations", "1", "--out", str(out)]) == 0
    yield out


def recorded(run_dir: Path) -> dict:
    return json.loads((readable_directory(run_dir / "checkpoint") / "loop.json").read_text())["precision"]


class RecordingRanks(DistributedContext):
    """Rank 0 of a `torchrun` group, alone: what it sends the other ranks is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list = []

    def broadcast(self, value=None):
        self.sent.append(value)
        return value


class ReplayingRanks(DistributedContext):
    """Another rank, alone: it receives, one by one, what rank 0 sent."""

    def __init__(self, messages: list) -> None:
        super().__init__(rank=1)
        self.messages = list(messages)

    def broadcast(self, value=None):
        return self.messages.pop(0)


@pytest.mark.slow
def test_a_run_started_in_bf16_goes_on_in_bf16_on_a_cpu_without_bf16_units(
    amx_run: Path, machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from espl.commands.run import add_arguments, run_main
    from espl.run import builder
    from espl.run.ranks import LOAD, START, STOP, Followers, follow

    assert recorded(amx_run) == AMX_START.to_dict()
    run_dir = tmp_path / "run"
    shutil.copytree(amx_run, run_dir)
    machine(AMD_AVX2)
    note = "policy.dtype auto: keeping bfloat16, which the run started with (auto would pick float32 on this machine)"

    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0  # finished: a resume only rebuilds it
    assert note in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["precision"]["dtype"] == "bfloat16"

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    ranks = RecordingRanks()
    followers = Followers(ranks)
    assert run_main(parser.parse_args(["--resume", str(run_dir), "--iterations", "2", "--quiet"]), followers) == 0
    followers.stop(0)
    out = capsys.readouterr().out
    assert out.count(note) == 1 and "policy model: bfloat16 on cpu (AMD EPYC 7R13 Processor)" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["precision"]["dtype"] == "bfloat16" and summary["extended"]
    assert recorded(run_dir)["reason"] == "cpu has amx_bf16"  # the start's record, carried on
    policy = json.loads((run_dir / "config.json").read_text())["policy"]  # rewritten for the new count:
    assert (policy["dtype"], policy["device"]) == ("auto", "auto")  # still auto, so `compare` sees no change
    kinds = [kind for kind, _ in ranks.sent]
    assert kinds[0] == START and LOAD in kinds and kinds[-1] == STOP
    assert ranks.sent[0][1].precision.dtype == "bfloat16"  # what the other ranks build their trainers from

    built = []
    real_build = builder.build_trainer
    monkeypatch.setattr(builder, "build_trainer", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    assert follow(ReplayingRanks(ranks.sent)) == 0
    base_weight = next(p for n, p in built[0][0].model.named_parameters() if "lora" not in n)
    assert base_weight.dtype == torch.bfloat16


@pytest.mark.slow
def test_a_run_checkpointed_before_the_record_resumes_here_and_is_recorded_from_then_on(
    amx_run: Path, machine: Machine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(amx_run, run_dir)
    loop = readable_directory(run_dir / "checkpoint") / "loop.json"
    loop.write_text(json.dumps({k: v for k, v in json.loads(loop.read_text()).items() if k != "precision"}))
    machine(AMD_AVX2)
    assert main(["run", "--resume", str(run_dir), "--iterations", "2", "--quiet"]) == 0
    assert "records no precision" in capsys.readouterr().out
    assert json.loads((run_dir / "summary.json").read_text())["precision"]["dtype"] == "float32"
    assert recorded(run_dir)["dtype"] == "float32" and recorded(run_dir)["device_name"] == "AMD EPYC 7R13 Processor"
