"""Baselines benchmark: each built-in baseline fitted and scored on AFLOW split 0 (3,515 training, 879 test
records) from cold in-memory caches (CIFs parsed, Magpie features computed within the timing): what the
first split of a run that trains or tests on AFLOW pays before its jobs.

Run: ``make benchmark`` (or ``pytest benchmarks --benchmark-only -k baselines``)."""

from __future__ import annotations

import pytest

from paraisite_bench.baselines import baseline_results
from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol


def _cold(data_dir):
    from paraisite_baselines import descriptors, models

    for cache in (descriptors._MAGPIE, descriptors._STRUCTURE, descriptors._REDUCED, models._MATCHES):
        cache.clear()
    ctx = Context(load_registry(), data_dir, Protocol())
    ctx.dataset("aflow")  # reading the JSON is not the baseline's cost
    return (ctx,), {}


@pytest.mark.parametrize("name", ["constant", "knn", "nearest-structure"])
def test_baseline_on_aflow(benchmark, data_dir, figures, name):
    def run(ctx):
        return baseline_results(ctx, [("aflow", "aflow", 0)], ctx.protocol.training_options, [name])

    (res,) = benchmark.pedantic(run, setup=lambda: _cold(data_dir), rounds=1, iterations=1)
    assert res["n_test"] == 879
    benchmark.extra_info["mape"] = res["metrics"]["mape"]
    figures.setdefault("baselines_aflow_split0", {})[name] = {"s": benchmark.stats.stats.mean,
                                                              "mape": res["metrics"]["mape"]}
