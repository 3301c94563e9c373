"""Screening throughput of `paraisite-bench predict`: the 4,394 AFLOW structures (a JSON of id, formula,
κ, CIF) through a 2-model MEGNet bundle — reading the inputs, featurising (cold: empty feature cache, CIF
parsing and graphs; warm: the chunks read back from the cache) and predicting with the domain distance.
Structures per second in ``extra_info`` and in ``figures["predict"]``.

Run: ``.venv/bin/python -m pytest benchmarks/test_bench_predict.py -m '' --benchmark-only -q -s``."""

from __future__ import annotations

import gzip
import itertools
import json

import pytest

from paraisite_bench.bundle import load_bundle
from paraisite_bench.cli import main
from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.predict import read_inputs, screen, use_threads
from paraisite_bench.protocol import Protocol


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, data_dir, bench_cache):
    """A 2-split MEGNet model of Dataset1 (1 epoch: the weights do not change the cost of screening)."""
    root = tmp_path_factory.mktemp("bench-predict")
    common = ["--data-dir", str(data_dir), "--cache-dir", str(bench_cache)]
    main(["run", "--backbones", "megnet", "--strategies", "scratch", "--train", "dataset1", "--test",
          "dataset1", "--splits", "2", "--epochs", "1", "--baselines", "none", "--no-progress",
          "--out", str(root / "run"), *common])
    main(["export", str(root / "run"), "--out", str(root / "model.pbm"), *common])
    return root / "model.pbm"


@pytest.fixture(scope="module")
def aflow_json(tmp_path_factory, data_dir):
    with gzip.open(data_dir / "ltc" / "aflow_agl.json.gz", "rt") as fh:
        records = json.load(fh)["records"]
    path = tmp_path_factory.mktemp("aflow") / "aflow.json"
    path.write_text(json.dumps(records))
    return path, len(records)


@pytest.mark.parametrize("case", ["cold", "cold-2-workers", "warm"])
def test_screen_aflow(benchmark, bundle, aflow_json, tmp_path, figures, case):
    registry = load_registry()
    modelset = load_bundle(bundle, registry)
    path, n = aflow_json
    counter = itertools.count()
    workers = 2 if "2-workers" in case else 1
    if case == "warm":  # fill the cache
        screen(modelset, Context(registry, tmp_path, Protocol(), tmp_path / "warm"), read_inputs([path]))

    def setup():
        cache = tmp_path / ("warm" if case == "warm" else f"cold{next(counter)}")
        return (Context(registry, tmp_path, Protocol(), cache),), {}

    def run(ctx):
        return screen(modelset, ctx, read_inputs([path]), workers=workers)

    with use_threads(1):  # predict's default --threads
        pred, skipped = benchmark.pedantic(run, setup=setup, rounds=1, iterations=1)
    rate = n / benchmark.stats.stats.min
    benchmark.extra_info.update(structures=n, predicted=len(pred.ids), skipped=len(skipped),
                                structures_per_s=round(rate, 1))
    figures.setdefault("predict", {})[case] = {"structures_per_s": round(rate, 1),
                                               "seconds": round(benchmark.stats.stats.min, 1)}
    print(f"\n{case}: {n} AFLOW structures screened in {benchmark.stats.stats.min:.1f} s = {rate:.0f}/s "
          f"({len(pred.ids)} predicted, {len(skipped)} skipped)")
