"""`paraisite-bench predict` and `export` on real runs and real CIFs: the bundle predicts what the run's
checkpoints predict (checked against the models rebuilt here), run and bundle agree, each bad input is one
line, the stored calibration is what this test computes from the validation parts, CrabNet works from
formulas."""

from __future__ import annotations

import csv
import gzip
import json
import warnings

import numpy as np
import pytest
import torch

from paraisite_bench.bundle import choose_cell, load_bundle
from paraisite_bench.checkpoint import model_from_checkpoint
from paraisite_bench.cli import main
from paraisite_bench.context import Context
from paraisite_bench.data import Record
from paraisite_bench.orchestrate import load_plugins
from paraisite_bench.predict import read_inputs, screen
from paraisite_bench.protocol import Protocol, make_split
from paraisite_bench.train import predict as train_predict

RUN = ["--splits", "2", "--train", "dataset1", "--test", "dataset1", "--strategies", "scratch",
       "--baselines", "none", "--no-progress", "--workers", "1", "--threads", "1"]


def _cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


def _dataset1(data_dir) -> list[dict]:
    with gzip.open(data_dir / "ltc" / "dataset1.json.gz", "rt") as fh:
        return json.load(fh)["records"]


@pytest.fixture(scope="session")
def megnet_run(tmp_path_factory, data_dir, cache_dir):
    out = tmp_path_factory.mktemp("predict-run") / "run"
    code = _cli("run", "--backbones", "megnet", "--epochs", "3", *RUN, "--out", str(out),
                "--data-dir", str(data_dir), "--cache-dir", str(cache_dir))
    assert code == 0
    return out


@pytest.fixture(scope="session")
def bundle(megnet_run, tmp_path_factory, data_dir, cache_dir):
    path = tmp_path_factory.mktemp("bundle") / "model.pbm"
    assert _cli("export", str(megnet_run), "--out", str(path), "--data-dir", str(data_dir),
                "--cache-dir", str(cache_dir)) == 0
    return path


@pytest.fixture(scope="session")
def inputs(tmp_path_factory, data_dir):
    """A folder of 8 real Dataset1 CIFs, a JSON of 6 more with κ, and the bad inputs."""
    from pymatgen.core import Lattice, Structure

    root = tmp_path_factory.mktemp("inputs")
    records = _dataset1(data_dir)
    good = root / "cifs"
    good.mkdir()
    for r in records[:8]:
        (good / f"{r['id']}.cif").write_text(r["cif"])
    (root / "with_kappa.json").write_text(json.dumps([{k: r[k] for k in ("id", "formula", "kappa", "cif")}
                                                      for r in records[8:14]]))
    bad = root / "bad"
    bad.mkdir()
    (bad / "broken.cif").write_text("data_broken\n_cell_length_a 4.0\n_atom_site_label\nthis is not a cif\n")
    disordered = Structure(Lattice.cubic(4.2), [{"Na": 0.5, "K": 0.5}, "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (bad / "disordered.cif").write_text(disordered.to(fmt="cif"))
    curium = Structure(Lattice.cubic(4.2), ["Cm", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    (bad / "curium.cif").write_text(curium.to(fmt="cif"))
    (root / "empty").mkdir()
    return {"good": good, "json": root / "with_kappa.json", "bad": bad, "empty": root / "empty",
            "records": records}


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _independent(run_dir, registry, records: list[dict]) -> np.ndarray:
    """Each split model's κ on ``records``, rebuilt here from the run's checkpoints (results.csv's stage
    keys) and run through the plain collate path in one batch: (records × models)."""
    keys = sorted({(int(r["split"]), r["stage_key"]) for r in _rows(run_dir / "results.csv")})
    out = []
    for _split, key in keys:
        ckpt = torch.load(run_dir / "checkpoints" / f"{key}.pt", map_location="cpu", weights_only=False)
        restored = model_from_checkpoint(registry, ckpt)
        feats = [restored.backbone.featurise(Record(r["id"], r.get("formula", ""), 1.0, r["cif"]))
                 for r in records]
        with torch.no_grad():
            raw = restored.model(restored.backbone.collate(feats))
        out.append(restored.transform.inverse(raw.numpy()))
    return np.stack(out, axis=1)


def test_bundle_predicts_what_the_run_checkpoints_predict(megnet_run, bundle, inputs, data_dir, tmp_path):
    registry = load_plugins()
    modelset = load_bundle(bundle, registry)
    assert [m.split for m in modelset.members] == [0, 1]
    ctx = Context(registry, data_dir, Protocol(), tmp_path / "cache")
    pred, skipped = screen(modelset, ctx, read_inputs([inputs["good"]]))
    assert skipped == []
    by_id = {r["id"]: r for r in inputs["records"][:8]}
    records = [by_id[p.stem] for p in sorted(inputs["good"].glob("*.cif"))]
    assert pred.ids == [r["id"] for r in records]
    # the same models through the training batcher, built here: identical bits
    mine = []
    for m in modelset.members:
        restored = model_from_checkpoint(registry, m.checkpoint)
        feats = [restored.backbone.featurise(Record(r["id"], "", 1.0, r["cif"])) for r in records]
        raw = train_predict(restored.model, restored.backbone, feats)
        mine.append(restored.transform.inverse(raw.numpy()))
    assert np.array_equal(pred.per_model, np.stack(mine, axis=1))
    # the run's own checkpoint files through the plain collate path: the same numbers
    independent = _independent(megnet_run, registry, records)
    np.testing.assert_allclose(pred.per_model, independent, rtol=1e-5)
    geometric = np.exp(np.log(independent).mean(axis=1))
    np.testing.assert_allclose(pred.kappa, geometric, rtol=1e-5)


def test_predict_on_run_and_on_bundle_agree(megnet_run, bundle, inputs, tmp_path, cli):
    code, out, err = cli("predict", str(megnet_run), str(inputs["good"]), str(inputs["json"]),
                         "--out", str(tmp_path / "run" / "p.csv"))
    assert code == 0, err
    assert "cell megnet × scratch × dataset1" in out
    code, out, err = cli("predict", "--model", str(bundle), str(inputs["good"]), str(inputs["json"]),
                         "--out", str(tmp_path / "bundle" / "p.csv"))
    assert code == 0, err
    from_run, from_bundle = _rows(tmp_path / "run" / "p.csv"), _rows(tmp_path / "bundle" / "p.csv")
    assert from_run == from_bundle and len(from_run) == 14
    kappa = [float(r["kappa_pred"]) for r in from_run]
    assert kappa == sorted(kappa)
    truth = {r["id"]: r["kappa"] for r in inputs["records"][8:14]}
    for r in from_run:
        assert float(r["kappa_low"]) <= float(r["kappa_pred"]) <= float(r["kappa_high"])
        if r["id"] in truth:
            assert float(r["kappa_true"]) == pytest.approx(truth[r["id"]])
            assert float(r["rel_error"]) == pytest.approx(
                abs(float(r["kappa_pred"]) - truth[r["id"]]) / truth[r["id"]], rel=1e-4)
        else:
            assert r["kappa_true"] == ""
    page = (tmp_path / "bundle" / "p.html").read_text()
    assert all(f'data-id="{r["id"]}"' in page for r in from_run)
    assert "src=\"http" not in page and "href=\"http" not in page and "<link" not in page


def test_each_bad_input_is_one_line(bundle, inputs, tmp_path, cli):
    bad = inputs["bad"]
    code, out, err = cli("predict", "--model", str(bundle), str(inputs["good"]), str(bad / "broken.cif"),
                         str(bad / "disordered.cif"), str(bad / "curium.cif"), str(inputs["empty"]),
                         "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("skipped:")]
    assert "Traceback" not in err and len(lines) == 4, err
    expected = {"broken.cif": "CIF", "disordered.cif": "disordered", "curium.cif": "Cm",
                str(inputs["empty"]): "no *.cif"}
    for name, words in expected.items():
        assert sum(name in line and words in line for line in lines) == 1, (name, lines)
    assert len(_rows(tmp_path / "p.csv")) == 8
    # nothing usable left: one error line, exit status 2
    code, out, err = cli("predict", "--model", str(bundle), str(bad), "--out", str(tmp_path / "q.csv"))
    assert code == 2 and "nothing to predict" in err and "Traceback" not in err


def test_bundle_of_another_plugin_version_is_one_line(bundle, inputs, tmp_path, cli):
    payload = torch.load(bundle, map_location="cpu", weights_only=False)
    current = payload["plugin"]["version"]
    payload["plugin"] = dict(payload["plugin"], version="0.0.1")
    torch.save(payload, tmp_path / "old.pbm")
    code, _, err = cli("predict", "--model", str(tmp_path / "old.pbm"), str(inputs["good"]),
                       "--out", str(tmp_path / "p.csv"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "0.0.1" in err and current in err and "install" in err
    payload["backbone"] = "nosuchbackbone"
    torch.save(payload, tmp_path / "missing.pbm")
    code, _, err = cli("predict", "--model", str(tmp_path / "missing.pbm"), str(inputs["good"]),
                       "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not installed" in err and len(err.strip().splitlines()) == 1


def test_stored_calibration_is_the_validation_coverage(megnet_run, bundle, data_dir):
    """Recompute, from the run's checkpoints and Dataset1 read here, each split model's error and domain
    distance on its 20 % part, then the coverage of the stored interval and of the models' P10–P90."""
    registry = load_plugins()
    cal = load_bundle(bundle, registry).calibration
    records = {r["id"]: r for r in _dataset1(data_dir)}
    ids = sorted(records)
    keys = sorted({(int(r["split"]), r["stage_key"]) for r in _rows(megnet_run / "results.csv")})
    kappas, reps, parts = [], [], []
    for split, key in keys:
        ckpt = torch.load(megnet_run / "checkpoints" / f"{key}.pt", map_location="cpu", weights_only=False)
        restored = model_from_checkpoint(registry, ckpt)
        batch = restored.backbone.collate([restored.backbone.featurise(Record(i, "", 1.0, records[i]["cif"]))
                                           for i in ids])
        with torch.no_grad():
            rep = restored.model.backbone(batch)
            kappas.append(restored.transform.inverse(restored.model.head(rep).numpy()))
        reps.append(rep.numpy().astype(np.float64))
        parts.append(make_split("dataset1", ids, split, 42, 0.2, 0.2))
    logs = np.log10(np.maximum(np.stack(kappas, axis=1), 1e-3))
    p10, p90 = 10 ** np.percentile(logs, 10, axis=1), 10 ** np.percentile(logs, 90, axis=1)
    errors, dists, raw = [], [], []
    for k, part in enumerate(parts):
        train = [ids.index(i) for i in part.train]
        t = reps[k][train]
        between = np.linalg.norm(t[:, None] - t[None], axis=2) + np.diag(np.full(len(t), np.inf))
        scale = np.median(between.min(axis=1))
        for i in part.test:
            n = ids.index(i)
            errors.append(abs(logs[n, k] - np.log10(records[i]["kappa"])))
            dists.append(np.linalg.norm(t - reps[k][n], axis=1).min() / scale)
            raw.append(p10[n] <= records[i]["kappa"] <= p90[n])
    errors, dists = np.array(errors), np.array(dists)
    assert cal["n"] == len(errors) == 38
    bins = np.searchsorted(cal["edges"], dists, side="right")
    for b, q in enumerate(cal["half_width"]):
        assert q == pytest.approx(np.quantile(errors[bins == b], 0.8, method="higher"), rel=1e-4, abs=1e-6)
    assert cal["coverage"] == pytest.approx(np.mean(errors <= np.array(cal["half_width"])[bins]))
    assert cal["coverage"] >= 0.8
    assert cal["raw_coverage"] == pytest.approx(np.mean(raw))
    assert cal["threshold"] == pytest.approx(np.percentile(dists, 95), rel=1e-4)


def test_default_cell_is_the_lowest_mean_mape():
    rows = [{"backbone": "megnet", "strategy": s, "train": t, "test": t, "selection": sel, "mape": m}
            for s, t, sel, m in [("scratch", "dataset1", "paper", "0.5"),
                                 ("scratch", "dataset1", "paper", "0.3"),
                                 ("double", "dataset1", "paper", "0.35"),
                                 ("double", "dataset1", "paper", "0.36"),
                                 ("double", "dataset1", "last", "0.1"),
                                 ("scratch", "mix", "paper", "0.2")]]
    rows.append({"backbone": "megnet", "strategy": "scratch", "train": "mix", "test": "dataset1",
                 "selection": "paper", "mape": "0.01"})
    cell, why = choose_cell({"protocol": {"selection": "paper"}}, rows, train="dataset1")
    assert cell == {"backbone": "megnet", "strategy": "double", "train": "dataset1"} and "0.355" in why
    cell, _ = choose_cell({"protocol": {"selection": "paper"}}, rows)
    assert cell["train"] == "mix"


def test_crabnet_predicts_from_formulas(tmp_path, data_dir, cache_dir, inputs, cli):
    run_dir = tmp_path / "crabnet"
    assert _cli("run", "--backbones", "crabnet", "--epochs", "2", *RUN, "--out", str(run_dir),
                "--data-dir", str(data_dir), "--cache-dir", str(cache_dir)) == 0
    table = tmp_path / "formulas.csv"
    good = [r["formula"] for r in inputs["records"][:5]]
    table.write_text("id,formula\n" + "".join(f"f{i},{f}\n" for i, f in enumerate(good)) + "bad,Xx2Qq\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, out, err = cli("predict", str(run_dir), str(table), "--out", str(tmp_path / "p.csv"))
    assert code == 0, err
    rows = _rows(tmp_path / "p.csv")
    assert sorted(r["formula"] for r in rows) == sorted(good)
    assert all(float(r["kappa_pred"]) > 0 for r in rows)
    assert sum("'bad'" in line for line in err.splitlines() if line.startswith("skipped:")) == 1


def test_workers_featurise_the_same(bundle, inputs, tmp_path, cli):
    """--workers 2 featurises chunks in spawned processes into the cache: the same predictions."""
    out = {}
    for workers in ("1", "2"):
        code, _, err = cli("predict", "--model", str(bundle), str(inputs["good"]), str(inputs["json"]),
                           "--workers", workers, "--cache-dir", str(tmp_path / f"cache{workers}"),
                           "--out", str(tmp_path / workers / "p.csv"))
        assert code == 0, err
        out[workers] = _rows(tmp_path / workers / "p.csv")
    assert out["1"] == out["2"] and len(out["1"]) == 14
    assert list((tmp_path / "cache2" / "features").glob("megnet-input-*.pt"))


def test_not_a_run_nor_a_bundle_is_one_line(inputs, tmp_path, cli):
    cif = str(next(inputs["good"].glob("*.cif")))
    code, _, err = cli("predict", str(tmp_path), cif, "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not a run directory" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli("predict", "--model", cif, cif, "--out", str(tmp_path / "p.csv"))
    assert code == 2 and "not" in err and "bundle" in err and len(err.strip().splitlines()) == 1
