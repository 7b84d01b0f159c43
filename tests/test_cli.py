"""The command line starts fast and never imports torch for help or listings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from espl.cli import COMMANDS, main


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_help_lists_commands_and_imports_no_torch() -> None:
    started = time.perf_counter()
    result = _run("import sys\nfrom espl.cli import main\nmain(['--help'])\nprint('TORCH' if 'torch' in sys.modules else 'NOTORCH')")
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    for name in COMMANDS:
        assert name in result.stdout
    assert result.stdout.strip().endswith("NOTORCH")
    assert elapsed < 10  # generous bound for a loaded CI box; the benchmark measures the real figure


def test_every_subcommand_has_help() -> None:
    for name in COMMANDS:
        result = _run(f"from espl.cli import main\nmain(['{name}', '--help'])")
        assert result.returncode == 0, (name, result.stderr)
        assert "usage: espl-bench " + name in result.stdout


def test_envs_json_lists_sizes_without_torch() -> None:
    code = (
        "import sys, io, contextlib\nfrom espl.cli import main\nbuf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n    main(['envs', '--json'])\n"
        "print(buf.getvalue())\nprint('TORCH' if 'torch' in sys.modules else 'NOTORCH')"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    body, marker = result.stdout.rsplit("\n", 2)[0], result.stdout.strip().splitlines()[-1]
    assert marker == "NOTORCH"
    rows = json.loads(body)
    assert {r["alias"] for r in rows} >= {"gsm8k", "math500", "aime", "hotpotqa"}
    assert all(r["train"] > 0 and r["test"] > 0 for r in rows)


def test_unknown_command_exits_2(capsys) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback() -> None:
    """`espl-bench envs --json | head -1`: the reader is gone before the listing is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # closed before the child writes a byte: every write is a broken pipe
    try:
        child = subprocess.run([sys.executable, "-m", "espl.cli", "envs", "--json"], stdout=write_end,
                               stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert child.returncode == 1
    assert "Traceback" not in child.stderr and "BrokenPipeError" not in child.stderr, child.stderr
