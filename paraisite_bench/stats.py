"""PLACEHOLDER until the stats branch lands (replaced by its mean_interval)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int


def mean_interval(values, level: float = 0.95) -> Interval:
    import numpy as np
    from scipy import stats
    v = np.asarray(list(values), dtype=float)
    n = len(v)
    if n < 2:
        return Interval(float(v.mean()) if n else float("nan"), float("nan"), float("nan"), n)
    lo, hi = stats.t.interval(level, n - 1, loc=v.mean(), scale=stats.sem(v))
    return Interval(float(v.mean()), float(lo), float(hi), n)
