"""Baselines on the real data: the built-ins against numpy/scikit-learn/pymatgen computations written here,
a third party's baseline run and stored by `run`, a raising or broken baseline plugin reported in one line."""

from __future__ import annotations

import csv
import json
import re
import textwrap
import warnings

import numpy as np
import pytest
from conftest import SMALL

from paraisite_bench.baselines import baseline_results, plan_baselines
from paraisite_bench.context import Context
from paraisite_bench.data import regression_target
from paraisite_bench.errors import PluginFailure
from paraisite_bench.jobs import Cell, Plan
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.store import Store

SPLIT = 3  # a fixed split of Dataset1 (76 training, 19 test records)


@pytest.fixture(scope="module")
def ctx(data_dir):
    return Context(load_registry(), data_dir, Protocol())


def _options(ctx):
    return ctx.protocol.training_options


def _parts(ctx, dataset="dataset1", r=SPLIT):
    split = ctx.split(dataset, r, _options(ctx)(dataset))
    records = ctx.dataset(dataset).records
    return [records[i] for i in split.train], [records[i] for i in split.test]


def _mape(pred, true):
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    return float(np.mean(np.abs(pred - true) / true))


def test_constant_is_the_mape_optimal_constant_of_the_training_kappa(ctx):
    train, test = _parts(ctx)
    y = np.array([r.value for r in train])
    yt = np.array([r.value for r in test])
    # Σ|c − y|/y is piecewise linear in c with kinks at the training values: its minimum is at one of them
    at_kinks = [_mape(np.full(len(y), c), y) for c in y]
    best = y[int(np.argmin(at_kinks))]
    (res,) = baseline_results(ctx, [("dataset1", "dataset1", SPLIT)], _options(ctx), ["constant"])
    fitted = ctx.registry.baseline("constant").fit(train, ctx.registry.dataset("dataset1").target)
    assert fitted.value == pytest.approx(best, rel=1e-12)
    assert fitted.value < np.median(y)  # the relative error pulls it below the median
    assert res["n_test"] == len(test) == 19
    assert res["metrics"]["mape"] == pytest.approx(_mape(np.full(len(yt), best), yt), rel=1e-12)
    # and no constant of a fine grid over the training range does better on the training part
    grid = np.geomspace(y.min(), y.max(), 20001)
    grid_mape = np.abs(grid[:, None] - y[None, :]) / y[None, :]
    assert grid_mape.mean(axis=1).min() >= _mape(np.full(len(y), fitted.value), y) - 1e-12
    # another target is scored by MAE: its constant is the median
    other = ctx.registry.baseline("constant").fit(train, regression_target("kappa-as-any", ""))
    assert other.value == pytest.approx(np.median(y))


def test_knn_predicts_the_geometric_mean_of_the_5_nearest_magpie_neighbours(ctx):
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    train, test = _parts(ctx)
    featuriser = ElementProperty.from_preset("magpie")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = np.array([featuriser.featurize(Composition(r.formula)) for r in train], dtype=float)
        Xt = np.array([featuriser.featurize(Composition(r.formula)) for r in test], dtype=float)
    assert not np.isnan(X).any() and not np.isnan(Xt).any()
    scaler = StandardScaler().fit(X)
    dist, idx = NearestNeighbors(n_neighbors=6).fit(scaler.transform(X)).kneighbors(scaler.transform(Xt))
    # records whose 5th and 6th neighbours are not tied (Dataset1 repeats some formulas)
    clear = np.flatnonzero(dist[:, 5] - dist[:, 4] > 1e-6)
    assert len(clear) >= 10
    logy = np.log10([r.value for r in train])
    expected = 10 ** logy[idx[clear, :5]].mean(axis=1)
    fitted = ctx.registry.baseline("knn").fit(train, ctx.registry.dataset("dataset1").target)
    pred = fitted.predict(test)
    np.testing.assert_allclose(pred[clear], expected, rtol=1e-10)
    (res,) = baseline_results(ctx, [("dataset1", "dataset1", SPLIT)], _options(ctx), ["knn"])
    assert res["metrics"]["mape"] == pytest.approx(_mape(pred, [r.value for r in test]), rel=1e-12)


def test_nearest_structure_takes_the_value_of_a_matching_training_structure(ctx):
    import dataclasses

    from pymatgen.analysis.structure_matcher import StructureMatcher

    train, test = _parts(ctx)
    target = ctx.registry.dataset("dataset1").target
    # Dataset1's repeated formulas are polymorphs (zincblende/wurtzite), which StructureMatcher tells apart:
    # plant a copy of one test structure, its lattice strained by 1 %, among the training records
    probe = test[0]
    strained = probe.structure.copy()
    strained.scale_lattice(strained.volume * 1.01 ** 3)
    assert StructureMatcher().fit(strained, probe.structure)
    twin = dataclasses.replace(probe, id="twin", value=123.0, cif=strained.to(fmt="cif"))
    fitted = ctx.registry.baseline("nearest-structure").fit([*train, twin], target)
    pred = fitted.predict(test)
    assert pred[0] == 123.0
    # every prediction is the value of one training record
    assert set(pred[1:]) <= {r.value for r in train} | {123.0}
    plain = ctx.registry.baseline("nearest-structure").fit(train, target).predict(test)
    assert set(plain) <= {r.value for r in train}


def test_a_structure_baseline_is_skipped_on_composition_only_datasets(ctx):
    plan = Plan(cells=[Cell("crabnet", "scratch", "expt_gap", "expt_gap", 0, "k", "c")])
    plan_baselines(ctx, plan, ["constant", "Nearest-Structure"])
    assert plan.baselines == ("constant", "nearest-structure")
    assert plan.skipped == [("baseline", "nearest-structure",
                             "dataset 'expt_gap' has compositions only (no crystal structures) and baseline "
                             "nearest-structure needs structures")]
    assert baseline_results(ctx, [("expt_gap", "expt_gap", 0)], _options(ctx), ["nearest-structure"]) == []


def test_the_documented_example_is_a_working_baseline_plugin(ctx, data_dir, tmp_path, monkeypatch):
    from paraisite_bench import hookspecs

    code = textwrap.dedent(hookspecs.register_baselines.__doc__.split("Runnable example::", 1)[1])
    (tmp_path / "example_register_baselines.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    import example_register_baselines

    own = Context(load_registry([example_register_baselines]), data_dir, Protocol())
    (res,) = baseline_results(own, [("dataset1", "dataset1", SPLIT)], _options(own), ["training-mean"])
    train, test = _parts(ctx)
    mean = np.mean([r.value for r in train])
    assert res["metrics"]["mape"] == pytest.approx(_mape(np.full(len(test), mean), [r.value for r in test]))


def test_a_raising_baseline_is_one_failure_and_the_others_still_run(ctx, data_dir):
    import baseline_plugin_for_tests

    own = Context(load_registry([baseline_plugin_for_tests]), data_dir, Protocol())
    cells = [("dataset1", "dataset1", 0), ("dataset1", "dataset1", 1)]
    failures: list[PluginFailure] = []
    res = baseline_results(own, cells, _options(own), ["exploding", "geomean"], failures)
    assert [(r["baseline"], r["split"]) for r in res] == [("geomean", 0), ("geomean", 1)]
    assert [str(f) for f in failures] == ["plugin baseline_plugin_for_tests failed: baseline exploding on "
                                         "dataset1 → dataset1 split 0: RuntimeError: this baseline always "
                                         "fails to fit"]
    with pytest.raises(PluginFailure, match="baseline exploding"):
        baseline_results(own, cells, _options(own), ["exploding"])


def test_run_stores_a_third_party_baseline_and_reports_a_raising_one_in_one_line(cli, tmp_path, ctx):
    out = tmp_path / "run"
    args = ["run", *SMALL, "--plugin", "baseline_plugin_for_tests", "--strategies", "scratch",
            "--train", "dataset1", "--test", "dataset1", "--splits", "1", "--out", str(out),
            "--baselines", "geomean,exploding,constant"]
    code, stdout, err = cli(*args)
    assert code == 1, err  # a plugin failed
    assert stdout.count("baseline exploding") == 1
    assert ("  plugin baseline_plugin_for_tests failed: baseline exploding on dataset1 → dataset1 split 0: "
            "RuntimeError: this baseline always fails to fit\n") in stdout
    assert "2 baseline results computed (geomean, exploding, constant; in the store)" in stdout
    results = list(csv.DictReader(open(out / "results.csv")))
    assert results and {r["backbone"] for r in results} == {"megnet", "baseline"}
    report = (out / "report.html").read_text()
    store = Store(out / "store.sqlite", lock=False)
    try:
        rows = store.baselines()
    finally:
        store.close()
    assert [(r["baseline"], r["train"], r["test"], r["split"], r["n_test"]) for r in rows] == [
        ("constant", "dataset1", "dataset1", 0, 19), ("geomean", "dataset1", "dataset1", 0, 19)]
    train, test = _parts(ctx, r=0)
    geo = np.exp(np.mean(np.log([r.value for r in train])))
    expected = _mape(np.full(19, geo), [r.value for r in test])
    assert rows[1]["metrics"]["mape"] == pytest.approx(expected)
    # the third party's baseline is a row of results.csv and a cell of the report's Table I, for each reading
    mine = [r for r in results if r["strategy"] == "geomean"]
    assert sorted(r["selection"] for r in mine) == ["last", "paper"]
    assert all(float(r["mape"]) == pytest.approx(expected) for r in mine)
    shown = re.findall(r'data-baseline="geomean"\s+data-mean="([^"]+)"', report)
    assert len(shown) == 2 and all(float(v) == pytest.approx(expected, abs=1e-6) for v in shown)
    info = json.loads((out / "run.json").read_text())
    assert info["baselines"] == ["geomean", "exploding", "constant"]
    assert set(info["baseline_keys"]) >= {r["key"] for r in rows} and len(info["baseline_keys"]) == 3
    # the same command again: the stored baselines are not computed again
    code, stdout, err = cli(*args)
    assert code == 1 and "baseline results computed" not in stdout


def test_a_broken_baseline_plugin_is_listed_and_the_others_load(cli):
    code, out, _ = cli("plugins", "--plugin", "broken_baseline_plugin_for_tests")
    assert code == 0
    assert re.search(r"^baselines:\n  constant +\[baselines\] composition input\. ", out, re.M)
    assert re.search(r"^  nearest-structure +\[baselines\] structure input\. ", out, re.M)
    assert ("broken plugins:\n  broken_baseline_plugin_for_tests: register_baselines: ImportError: needs a "
            "baseline library that is not installed") in out


def test_records_a_baseline_cannot_read_are_left_out_not_a_failure(data_dir, tmp_path, monkeypatch):
    import gzip

    import plugins_for_tests

    with gzip.open(data_dir / "ltc" / "dataset1.json.gz", "rt") as fh:
        good = json.load(fh)["records"][:30]
    bad = [{"id": "no-element", "formula": "Xq2", "kappa": 3.0},
           {"id": "broken-cif", "formula": "", "kappa": 4.0, "cif": "data_x\n_cell_length_a 1\n"},
           {"id": "formula-only", "formula": "NaCl", "kappa": 5.0}]
    path = tmp_path / "user.json"
    path.write_text(json.dumps({"name": "userfile", "records": good + bad}))
    monkeypatch.setenv("PB_TEST_DATASET", str(path))
    own = Context(load_registry([plugins_for_tests]), data_dir, Protocol(test_fraction=0.5))
    test_ids = own.split("userfile", 0, _options(own)("userfile")).test
    failures: list[PluginFailure] = []
    res = baseline_results(own, [("userfile", "userfile", 0)], _options(own), ["knn", "nearest-structure"],
                           failures)
    assert failures == []
    n = {r["baseline"]: r["n_test"] for r in res}
    good_ids = {r["id"] for r in good}
    assert n == {"knn": len([i for i in test_ids if i in good_ids | {"formula-only"}]),
                 "nearest-structure": len([i for i in test_ids if i in good_ids])}
