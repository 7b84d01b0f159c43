"""Mean and standard error over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Estimate:
    """The mean of n values and its standard error (None when n < 2: it cannot be estimated)."""

    mean: float
    se: float | None
    n: int

    def format(self, scale: float = 1.0, digits: int = 1, suffix: str = "") -> str:
        mean = f"{self.mean * scale:.{digits}f}{suffix}"
        return mean if self.se is None else f"{mean} ± {self.se * scale:.{digits}f}"


def estimate(values: Sequence[float]) -> Estimate | None:
    """Sample standard deviation (n - 1) over sqrt(n); None for no values."""
    values = [float(v) for v in values]
    n = len(values)
    if n == 0:
        return None
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, n)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Estimate(mean, math.sqrt(variance / n), n)
