"""Built-in baselines: what a predictor with no training stage scores on the same splits as the trained
models — the best constant, the mean of the 5 nearest neighbours by composition, and the value of the most
similar training structure (see :mod:`paraisite_baselines.models`)."""

from __future__ import annotations

from paraisite_bench import hookimpl

from .models import Constant, KNearest, NearestStructure


@hookimpl
def register_baselines(register):
    register(Constant)
    register(KNearest)
    register(NearestStructure)
