"""Baselines of a third party, loaded with ``--plugin baseline_plugin_for_tests``: one that works (the
geometric mean of the training values) and one whose fit always raises."""

from __future__ import annotations

import numpy as np

from paraisite_bench import hookimpl
from paraisite_bench.baseline import Baseline


class GeometricMean(Baseline):
    name = "geomean"
    description = "the geometric mean of the training values"
    needs = "composition"

    def fit(self, records, target):
        self.value = float(np.exp(np.mean(np.log([r.value for r in records]))))
        return self

    def predict(self, records):
        return np.full(len(records), self.value)


class Exploding(Baseline):
    name = "exploding"
    description = "a baseline whose fit always raises"
    needs = "composition"

    def fit(self, records, target):
        raise RuntimeError("this baseline always fails to fit")


@hookimpl
def register_baselines(register):
    register(GeometricMean)
    register(Exploding)
