"""One colour per method, the same in every plot of every leaderboard.

Colours taken by a method's position in a plot change when a plot lacks a method (`base`
draws no reward curve), so a reader matching lines across plots would be misled. The
built-in methods have fixed colours; any other method (a plugin's) gets one picked from a
separate pool by a hash of its name, stable across processes and machines.
"""

from __future__ import annotations

import hashlib

METHOD_COLOURS = {
    "base": "#7f7f7f",
    "rl": "#1f77b4",
    "espl": "#d62728",
    "evolution": "#2ca02c",
    "reflect": "#9467bd",
    "gepa": "#ff7f0e",
}
"""The built-in methods (`espl.methods`): grey for the untrained reference, distinct hues for the rest."""

OTHER_COLOURS = (
    "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
)
"""For methods outside `METHOD_COLOURS`: none of these is a built-in method's colour."""


def method_colour(method: str) -> str:
    """The hex colour a method's curves are drawn in."""
    if method in METHOD_COLOURS:
        return METHOD_COLOURS[method]
    digest = hashlib.sha256(method.encode("utf-8")).digest()
    return OTHER_COLOURS[int.from_bytes(digest[:4], "big") % len(OTHER_COLOURS)]
