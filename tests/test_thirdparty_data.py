"""Bring your own data: ``run --dataset-file`` with a CSV of CIF paths, a JSON of CIF texts and a
folder of CIFs plus a CSV of κ — the same 30 Dataset1 records in three forms."""

from __future__ import annotations

import csv
import gzip
import json

import pytest


@pytest.fixture(scope="module")
def user_files(tmp_path_factory, data_dir):
    d = tmp_path_factory.mktemp("userdata")
    records = json.load(gzip.open(data_dir / "ltc" / "dataset1.json.gz"))["records"][:30]
    (d / "cifs").mkdir()
    with open(d / "kappa_paths.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["ID", "Kappa", "CIF"])  # column names are case-insensitive
        for r in records:
            (d / "cifs" / f"{r['id']}.cif").write_text(r["cif"])
            w.writerow([r["id"], r["kappa"], f"cifs/{r['id']}.cif"])
    (d / "kappa_texts.json").write_text(json.dumps({"records": [
        {"id": r["id"], "kappa": r["kappa"], "cif": r["cif"]} for r in records]}))
    with open(d / "cifs" / "kappa.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "kappa"])
        for r in records:
            w.writerow([r["id"], r["kappa"]])
    with open(d / "mixed.csv", "w", newline="") as fh:  # the last 5 records have a formula and no CIF
        w = csv.writer(fh)
        w.writerow(["id", "kappa", "cif", "formula"])
        for i, r in enumerate(records):
            w.writerow([r["id"], r["kappa"], f"cifs/{r['id']}.cif" if i < 25 else "", r["formula"]])
    return d, records


def test_three_forms_of_the_same_data_read_the_same_records(user_files):
    from paraisite_bench.data import records_fingerprint, validate_records
    from paraisite_bench.userdata import dataset_specs

    d, records = user_files
    specs = dataset_specs([str(d / "kappa_paths.csv"), str(d / "kappa_texts.json"), f"folder={d / 'cifs'}"])
    assert [s.name for s in specs] == ["kappa_paths", "kappa_texts", "folder"]
    loaded = [validate_records(s.name, s.loader(None)) for s in specs]
    assert all(not bad and len(good) == 30 for good, bad in loaded)
    assert len({records_fingerprint(good) for good, _ in loaded}) == 1
    assert [r.formula for r in loaded[0][0]] == [r["formula"] for r in records]  # derived from the CIFs


def test_run_trains_and_tests_on_user_datasets_in_worker_processes(cli, tmp_path, user_files):
    d, _ = user_files
    out = tmp_path / "run"
    code, stdout, err = cli("run", "--preset", "quick", "--strategies", "scratch", "--splits", "1",
                            "--epochs", "1", "--no-progress", "--workers", "2",
                            "--dataset-file", str(d / "kappa_paths.csv"),
                            "--dataset-file", f"folder={d / 'cifs'}",
                            "--dataset-file", str(d / "mixed.csv"),
                            "--train", "kappa_paths,folder,mixed", "--test", "kappa_paths,dataset1",
                            "--out", str(out))
    assert code == 0, err
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["train"], r["test"]) for r in rows} == {(t, s) for t in ("kappa_paths", "folder", "mixed")
                                                       for s in ("kappa_paths", "dataset1")}
    assert all(float(r["mape"]) > 0 for r in rows)
    skipped = list(csv.DictReader(open(out / "skipped.csv")))
    assert len(skipped) == 5 and {s["dataset"] for s in skipped} == {"mixed"}
    assert all("has no crystal structure (CIF)" in s["problem"] for s in skipped)
    info = json.loads((out / "run.json").read_text())
    assert info["data"]["kappa_paths"] == info["data"]["folder"]  # same records, same checksum
    code, stdout, _ = cli("plugins")
    assert "kappa_paths" not in stdout  # registered for that run only
