"""The project as a user installs it: a wheel (not an editable install) carries its suites,
presets and data, and its console script plans a built-in suite from any folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_built_wheel_installed_in_a_fresh_venv_plans_a_builtin_suite(tmp_path: Path) -> None:
    source = tmp_path / "source"  # the build writes build/ and *.egg-info next to its sources
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".benchmarks"))
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = dist.glob("espl_bench-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env_dir), "platbase": str(env_dir)}))
    # The dependencies come from this environment's site-packages, appended after the fresh
    # venv's own (so the wheel's espl wins over the editable checkout, whose finder is not run).
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = env_dir / "bin" / "python"
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([str(python), "-c", "import espl, envs; print(espl.__file__); print(envs.__file__)"],
                           cwd=work, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and all(str(env_dir) in line for line in where.stdout.split()), where.stdout + where.stderr

    compare = subprocess.run([str(env_dir / "bin" / "espl-bench"), "compare", "--suite", "math-cpu", "--dry-run"],
                             cwd=work, capture_output=True, text=True, timeout=300)
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    assert "arithmetic--espl--seed0" in compare.stdout and "missing" in compare.stdout
    presets = compare.stdout.split("preset: default (built-in presets: ", 1)[1].split(")")[0].split(", ")
    assert {"default", "paper", "smoke"} <= set(presets), compare.stdout
    assert not (work / "runs").exists(), "a dry run creates nothing"
