"""`run --dry-run`: the plan as the run would execute it — stages to train, stages reused from the run's store
or taken from the stage cache, evaluations, baselines — and an estimated wall time from rates measured on this
machine (kept per machine under the cache dir); it trains nothing and writes nothing under --out."""

from __future__ import annotations

import csv
import json
import re
import sqlite3

import pytest

#: Step 1 and Step 3 on Dataset1, 3 splits of 2 epochs, a 60-structure AFLOW stage, the constant baseline.
GRID = ["run", "--preset", "quick", "--backbones", "megnet", "--strategies", "scratch,double", "--train",
        "dataset1", "--test", "dataset1", "--splits", "3", "--epochs", "2", "--subsample", "aflow=60",
        "--baselines", "constant", "--no-progress"]


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    assert found, f"{pattern!r} not in:\n{text}"
    return int(found.group(1))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache dir of the module's own (fresh features, rates and stage cache)."""
    return tmp_path_factory.mktemp("dry-run-cache")


def test_dry_run_counts_the_stages_and_writes_nothing(cli, tmp_path, cache):
    out = tmp_path / "run"
    code, stdout, err = cli(*GRID, "--train", "dataset1,dataset2", "--cache-dir", str(cache), "--out",
                            str(out), "--dry-run")
    assert code == 0, err
    assert not out.exists()
    # per split: scratch trains one stage per target, double one per target on top of one AFLOW stage
    # that both targets share
    splits, targets = 3, 2
    assert _count(r"stages to train: (\d+)", stdout) == splits * (targets + targets + 1)
    assert _count(r"megnet\s+aflow\s+2 epochs ×\s+(\d+) stage", stdout) == splits
    assert _count(r"baselines \(constant\): (\d+) result", stdout) == splits * targets
    assert "(measured" in stdout and "estimated wall time with 1 worker(s) × 1 thread(s) on cpu" in stdout
    # rates are kept per machine under the cache dir, and reused by the next dry run
    assert len(list((cache / "rates").glob("*.json"))) == 1
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(out), "--dry-run")
    assert code == 0, err
    assert "(cached" in stdout and "(measured" not in stdout and not out.exists()


def _files(run) -> dict[str, int]:
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("*")}


def _stage_sizes(run) -> list[dict]:
    db = sqlite3.connect(run / "store.sqlite")
    rows = db.execute("SELECT json_extract(spec, '$.dataset'), json_extract(spec, '$.options.epochs'), "
                      "n_train, n_val FROM stages").fetchall()
    db.close()
    return [dict(zip(("dataset", "epochs", "n_train", "n_val"), r)) for r in rows]


def _expected_estimate(cache, run) -> float:
    """The wall time the estimate should give one worker, from the stored rates and the sizes the run
    recorded: every stage's epochs × (training / training rate + validation / evaluation rate), two readings
    (selected and last epoch) of each evaluation, featurising every record, the baseline cells."""
    (book,) = (cache / "rates").glob("*.json")
    rates = list(json.loads(book.read_text())["rates"].values())
    train = {r["dataset"]: r for r in rates if "train_per_s" in r}
    feat = {r["dataset"]: r["s_per_record"] for r in rates if "s_per_record" in r}
    (base,) = [r["s_per_cell"] for r in rates if "s_per_cell" in r]
    total = 0.0
    records = {}
    for s in _stage_sizes(run):
        rate = train[s["dataset"]]
        total += s["epochs"] * (s["n_train"] / rate["train_per_s"] + s["n_val"] / rate["eval_per_s"])
        records[s["dataset"]] = s["n_train"] + s["n_val"]  # every record of the dataset, featurised once
    total += sum(feat[d] * n for d, n in records.items())
    with open(run / "results.csv", newline="") as fh:
        results = list(csv.DictReader(fh))
    models = [r for r in results if r["backbone"] != "baseline"]
    total += sum(int(r["n_test"]) for r in models) / train["dataset1"]["eval_per_s"]  # one row per reading
    baselines = {r["split"] for r in results if r["backbone"] == "baseline"}
    return total + base * len(baselines)


def test_estimate_is_the_schedule_of_measured_rates_and_store_and_cache_are_reused(cli, tmp_path, cache):
    a, b = tmp_path / "a", tmp_path / "b"
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(a), "--dry-run")
    assert code == 0, err
    assert _count(r"stages to train: (\d+)", stdout) == 3 * 3
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(a))
    assert code == 0, err
    info = json.loads((a / "run.json").read_text())
    # estimated at the start from the rates the dry run measured: the sum of the jobs on one worker
    assert info["estimate_s"] == pytest.approx(_expected_estimate(cache, a), abs=0.3)
    assert 1 / 3 < info["wall_s"] / info["estimate_s"] < 3  # a loose sanity bound, not a timer test
    assert "estimated before the start" in stdout

    before = _files(a)
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(a), "--dry-run")
    assert code == 0, err
    assert _files(a) == before  # the store is read, never written (nor its -wal and -shm files made)
    assert _count(r"stages to train: (\d+)", stdout) == 0
    assert _count(r"reused from the run's store: (\d+)", stdout) == 9
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(b), "--dry-run")
    assert code == 0, err
    assert not b.exists()
    assert _count(r"taken from the stage cache: (\d+)", stdout) == 3  # the AFLOW stage of each split
    assert _count(r"stages to train: (\d+)", stdout) == 6
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(b), "--dry-run",
                            "--no-stage-cache")
    assert _count(r"stages to train: (\d+)", stdout) == 9

    # a damaged rates file: no estimate, the run goes on
    (book,) = (cache / "rates").glob("*.json")
    book.write_text(json.dumps({"rates": {k: {} for k in json.loads(book.read_text())["rates"]}}))
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(tmp_path / "c"), "--splits", "1",
                            "--strategies", "scratch")
    assert code == 0, err
    assert json.loads((tmp_path / "c" / "run.json").read_text())["estimate_s"] is None
    # and the next dry run measures the damaged rates again
    code, stdout, err = cli(*GRID, "--cache-dir", str(cache), "--out", str(b), "--dry-run")
    assert code == 0, err
    assert "(measured" in stdout and "(cached" not in stdout


def test_select_dry_run_plans_the_study_and_writes_nothing(cli, tmp_path, cache):
    out = tmp_path / "select"
    code, stdout, err = cli("select", "--candidates", "megnet:scratch,megnet:eform", "--dataset", "dataset1",
                            "--repeats", "2", "--epochs", "2", "--cache-dir", str(cache), "--out", str(out),
                            "--dry-run")
    assert code == 0, err
    assert _count(r"stages to train: (\d+)", stdout) == 2 * 2  # candidates × repeats
    assert "estimated wall time" in stdout and not out.exists()
