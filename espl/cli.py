"""The `espl-bench` command line.

Subcommands are imported only when invoked, so `espl-bench --help` starts fast and never
imports torch. Each subcommand is a module with `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from espl import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    "envs": ("espl.commands.envs", "list the registered environments and their dataset sizes"),
    "retriever": ("espl.commands.retriever", "build a retrieval index or serve one over HTTP (Search-R1 API)"),
    "eval": ("espl.commands.eval", "evaluate a model on an environment's test split (accuracy, pass@k)"),
    "run": ("espl.commands.run", "train one method on one env (E-SPL, RL, evolution, ...) into a run directory"),
    "compare": ("espl.commands.compare", "run a comparison suite's missing runs and write its leaderboard"),
    "leaderboard": ("espl.commands.leaderboard", "build leaderboard tables and plots from existing run directories"),
    "export": ("espl.commands.export", "write a run's LoRA adapter (peft, or merged) and system prompt for serving"),
    "prompts": ("espl.commands.prompts", "show a run's prompt population, ratings and the best prompt's lineage"),
    "serve-vllm": ("espl.commands.serve_vllm", "serve a model with vLLM's OpenAI-compatible server (127.0.0.1)"),
    "launch": ("espl.commands.launch", "place a run's vLLM fleet, trainer and retrieval server on a Ray cluster (extra `ray`)"),
}


def _top_level_help() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: espl-bench <command> [options]",
        "",
        "Benchmark harness for LLM agents that learn by RL on their weights and by evolving",
        "their system prompt (E-SPL), against RL-only and prompt-evolution baselines.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "Run `espl-bench <command> --help` for the options of a command.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0
    if argv[0] == "--version":
        print(f"espl-bench {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"espl-bench: unknown command {name!r}\n\n{_top_level_help()}", file=sys.stderr)
        return 2
    module_name, summary = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"espl-bench {name}", description=summary)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()
    except BrokenPipeError:
        return _reader_went_away()
    return code


def _reader_went_away() -> int:
    """The reader closed the pipe (`espl-bench envs --json | head -1`): exit quietly.

    Python's documented recipe: point stdout at devnull so that the interpreter's last flush at
    exit does not raise again and print a traceback.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1


if __name__ == "__main__":
    sys.exit(main())
