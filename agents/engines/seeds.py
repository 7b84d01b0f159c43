"""Per-request sampling seeds: one call's seed spread over its prompts.

A rollout sends a group's N samples as N copies of one prompt, each with `n=1`. Were every
request seeded with the call's seed, a server that honours per-request seeds (vLLM) would
return N identical samples. Request `i` of a call seeded `s` is seeded from `(s, i)` instead:
still reproducible, and independent of how the call is spread over servers.
"""

from __future__ import annotations

import numpy as np

MAX_REQUEST_SEED = 2**31 - 1
"""Servers take a signed 32- or 64-bit seed; 31 bits suit all of them."""


def request_seed(seed: int, index: int) -> int:
    """The seed of request `index` of a call seeded `seed` (in [0, 2**31))."""
    return int(np.random.SeedSequence([seed % 2**63, index]).generate_state(1)[0]) % (MAX_REQUEST_SEED + 1)
