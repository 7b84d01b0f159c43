"""Plugins: packages that add methods, operators, losses, selection strategies or tracking backends.

A package points the `espl_bench.plugins` entry-point group at a module that calls the
registration functions (`espl.methods.register_method`, `espl.evolution.operators.register_operator`,
`espl.rl.losses.register_loss`, `espl.evolution.selection.register_strategy`,
`espl.tracking.register_tracker`):

    [project.entry-points."espl_bench.plugins"]
    my-methods = "mypackage.espl_plugin"

The registries import those modules the first time a name is looked up, so a plugin's
method is as usable from `espl-bench run --method ...` as a built-in one. (Environments
have their own group, `espl_bench.envs`, read by `envs.registry`.)
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "espl_bench.plugins"
_loaded = False


def load_plugins() -> None:
    """Import every module of the entry-point group (once; a broken plugin is logged, not fatal)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(ep.value.partition(":")[0])
        except Exception as error:  # a broken plugin must not take the built-ins down
            log.warning("could not load espl-bench plugin %s (%s): %s", ep.name, ep.value, error)
