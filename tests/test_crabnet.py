"""The CrabNet backbone, the composition datasets and the pretrained:<task> strategies (small sizes)."""

from __future__ import annotations

import csv
import json
import sqlite3
import sys

import numpy as np
import pytest
import torch

from paraisite_bench.data import KAPPA, Record, regression_target, validate_records

TINY = "d_model=32,N=1,heads=2,dim_feedforward=64"
FORMULAS = ["NaCl", "Fe2O3", "Li3Fe2(PO4)3", "Si", "Ba0.5Sr0.5TiO3", "Cu2ZnSnS4"]


@pytest.fixture(autouse=True)
def _tiny_crabnet(monkeypatch):
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", TINY)


def _backbone():
    from paraisite_crabnet import CrabNetBackbone

    return CrabNetBackbone()


def _batch(bb, formulas=FORMULAS):
    return bb.collate([bb.featurise(Record(id=f, formula=f, value=1.0)) for f in formulas])


def test_featurisation_matches_crabnets_own_edm():
    """Element numbers and fractions are what crabnet.utils.utils.get_edm gives (its element order)."""
    import pandas as pd
    from crabnet.utils.utils import get_edm

    bb = _backbone()
    batch = _batch(bb)
    edm, _y, _f = get_edm(pd.DataFrame({"formula": FORMULAS, "target": np.zeros(len(FORMULAS))}),
                          verbose=False)
    n = edm.shape[1] // 2
    ref_src = torch.as_tensor(edm[:, :n, 0], dtype=torch.long)
    ref_frac = torch.as_tensor(edm[:, n:, 0], dtype=torch.float32)
    assert torch.equal(batch.src, ref_src[:, : batch.src.shape[1]])
    assert torch.allclose(batch.frac, ref_frac[:, : batch.frac.shape[1]], atol=1e-6)


def test_representation_through_fc_out_reproduces_subcrab_output():
    """The 128-d representation (output_nn's input to fc_out, mean-pooled over real elements) passed
    through fc_out gives exactly SubCrab's own output, padding included."""
    bb = _backbone()
    module = bb.build()
    module.eval()
    batch = _batch(bb)
    with torch.no_grad():
        rep = module(batch)
        ours = module.crabnet_output(batch)
        theirs = module.subcrab(batch.src, batch.frac)
    assert rep.shape == (len(FORMULAS), bb.representation_dim)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # pooling over the padding as well would not reproduce it (the test can fail)
    with torch.no_grad():
        fea = module.hidden(batch.src, batch.frac).mean(dim=1)
        out = module.subcrab.output_nn.fc_out(fea)
    assert not torch.allclose(out[:, :1] * torch.sigmoid(out[:, 2:]), theirs, atol=1e-5)


def test_a_formula_alone_or_padded_gives_the_same_representation():
    bb = _backbone()
    module = bb.build()
    module.eval()
    with torch.no_grad():
        alone = module(_batch(bb, ["NaCl"]))
        padded = module(_batch(bb, ["NaCl", "Cu2ZnSnS4"]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_importing_crabnet_does_not_reseed_our_generators():
    for name in [m for m in sys.modules if m.startswith("crabnet")]:
        sys.modules.pop(name)
    from paraisite_crabnet import _kingcrab

    torch.manual_seed(7)
    np.random.seed(7)
    expect = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(7)
    np.random.seed(7)
    _kingcrab()  # crabnet.kingcrab calls torch.manual_seed(42) / np.random.seed(42) at import
    assert "crabnet.kingcrab" in sys.modules
    assert torch.equal(torch.rand(3), expect[0])
    assert np.array_equal(np.random.rand(3), expect[1])


def test_bad_formula_and_unknown_size_setting_are_clear(monkeypatch):
    from paraisite_bench.errors import RecordError, UserError

    bb = _backbone()
    with pytest.raises(RecordError, match="does not parse"):
        bb.featurise(Record(id="x", formula="Xx2!", value=1.0, source="t"))
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", "d_modle=64")
    with pytest.raises(UserError, match="unknown setting 'd_modle'"):
        _backbone()


def test_targets_decide_record_validation():
    recs = [Record("a", "NaCl", 0.0), Record("b", "KCl", -1.0), Record("c", "LiF", float("nan")),
            Record("d", "NaF", 2.0)]
    good, bad = validate_records("gap", recs, regression_target("band gap", "eV"))
    assert [r.id for r in good] == ["a", "b", "d"] and [e.record_id for e in bad] == ["c"]
    good, bad = validate_records("k", recs, KAPPA)
    assert [r.id for r in good] == ["d"] and "≤ 0" in bad[0].problem


def test_matbench_rows_carry_the_official_fold_ids():
    """Row i of crabnet's csv is matbench's mb-<task>-<i+1>: the ids are exactly the official folds'."""
    from matbench.metadata import mbv01_validation
    from paraisite_matbench import TASKS, load_task

    for name in ("expt_gap", "steels_yield", "elasticity_log10_kvrh", "phonons"):
        task = TASKS[name]
        ids = {r.id for r in load_task(task)}
        folds = mbv01_validation.splits[task.matbench]
        official = {i for f in folds.values() for i in f.test}
        assert ids == official, name


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_crabnet_and_megnet_end_to_end_with_a_shared_pretraining_stage(cli, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--backbones", "megnet,crabnet",
            "--strategies", "scratch,pretrained:expt_gap,double:expt_gap",
            "--train", "dataset1", "--test", "dataset1", "--splits", "1", "--epochs", "2",
            "--stage-epochs", "expt_gap=1,aflow=1", "--subsample", "expt_gap=150,aflow=60",
            "--no-progress", "--out", str(out)]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    rows = [r for r in _rows(out / "results.csv") if r["backbone"] != "baseline"]
    got = {(r["backbone"], r["strategy"]) for r in rows}
    assert got == {("megnet", "scratch"), ("crabnet", "scratch"), ("crabnet", "pretrained:expt_gap"),
                   ("crabnet", "double:expt_gap")}
    assert all(0 < float(r["mape"]) for r in rows)
    # a structure backbone skips the composition-only pretraining set, with the reason in skipped.csv
    skipped = {r["id"]: r["problem"] for r in _rows(out / "skipped.csv")}
    assert "compositions only" in skipped["megnet × pretrained:expt_gap"]
    # Dataset1's polymorph pairs: one warning, recorded in run.json
    assert stderr.count("26 formulas occur more than once") == 1
    assert any("26 formulas" in n for n in json.loads((out / "run.json").read_text())["notes"])
    # the expt_gap stage is trained once and shared by pretrained:expt_gap and double:expt_gap
    db = sqlite3.connect(out / "store.sqlite")
    datasets = [json.loads(s)["dataset"] for (s,) in db.execute("SELECT spec FROM stages")]
    assert (datasets.count("expt_gap") == 1 and datasets.count("aflow") == 1
            and datasets.count("dataset1") == 4)
    db.close()
    code, stdout, _ = cli(*args)
    assert code == 0 and "0 stages trained" in stdout


def test_fidelity_check_scores_with_matbench(data_dir, cache_dir):
    """One fold of the expt_gap fidelity check at toy size: recorded and scored by matbench itself."""
    from paraisite_matbench.fidelity import run

    out = run("crabnet", "expt_gap", epochs=1, batch_size=256, folds=[0], threads=1, data_dir=data_dir,
              cache_dir=cache_dir, lr=1e-3, cosine_tmax=1, inner_val=0.1)
    fold = out["folds"][0]
    assert fold["n_test"] == 921 and fold["n_train"] + fold["n_val"] == 3683
    assert 0 < out["mean_mae_recorded_folds"] < 5
    assert out["published"]["mean_mae"] == pytest.approx(0.3463)
