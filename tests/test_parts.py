"""Runs in parts: `run --only-splits` trains a subset of the splits with the stage keys of the whole run, and
`report PART... --out` joins the parts into the run they make — its table1.csv, results.csv and curves.csv
byte for byte those of a single run with every split; parts that differ, or that disagree on a split both
hold, are refused with one line."""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import statistics

import pytest

from paraisite_bench.cli import main

#: Step 1 and Step 3 on Dataset1, 3 splits of 2 epochs, a 60-structure AFLOW stage, the constant baseline.
GRID = ["--preset", "quick", "--backbones", "megnet", "--strategies", "scratch,double", "--train", "dataset1",
        "--test", "dataset1", "--splits", "3", "--epochs", "2", "--subsample", "aflow=60", "--baselines",
        "constant", "--no-progress"]


def _cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    """The whole run, and the same run in two parts (splits 0-1 and split 2), each with its own stage
    cache so that every part trains its own stages."""
    root = tmp_path_factory.mktemp("parts")
    out = {}
    for name, extra in (("whole", []), ("p01", ["--only-splits", "0-1"]), ("p2", ["--only-splits", "2"])):
        code = _cli("run", *GRID, *extra, "--data-dir", str(data_dir), "--cache-dir",
                    str(root / f"cache-{name}"), "--out", str(root / name))
        assert code == 0, name
        out[name] = root / name
    out["root"] = root
    return out


def _info(run) -> dict:
    return json.loads((run / "run.json").read_text())


def _rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_parts_hold_their_splits_with_the_whole_runs_stage_keys(runs):
    whole, p01, p2 = (_info(runs[n]) for n in ("whole", "p01", "p2"))
    assert p01["only_splits"] == [0, 1] and p2["only_splits"] == [2] and whole["only_splits"] is None
    assert {c["split"] for c in p01["cells"]} == {0, 1} and {c["split"] for c in p2["cells"]} == {2}
    # the same stages, keyed alike: the parts together are the whole run's stages
    assert set(p01["stages"]) | set(p2["stages"]) == set(whole["stages"])
    assert not set(p01["stages"]) & set(p2["stages"])


def test_joined_parts_give_the_single_runs_outputs_byte_for_byte(runs, cli):
    out = runs["root"] / "joined" / "report.html"
    code, stdout, err = cli("report", str(runs["p01"]), str(runs["p2"]), "--out", str(out))
    assert code == 0, err
    assert "from 2 run(s) joined into 1" in stdout
    for name in ("table1.csv", "results.csv", "curves.csv"):
        assert (out.parent / name).read_bytes() == (runs["whole"] / name).read_bytes(), name
    # Table I's mean over the 3 splits, computed here from the parts' own results
    parts = [r for run in ("p01", "p2") for r in _rows(runs[run] / "results.csv")
             if r["selection"] == "paper" and r["strategy"] == "scratch"]
    assert sorted(int(r["split"]) for r in parts) == [0, 1, 2]
    table = {(r["strategy"], r["selection"]): r for r in _rows(out.parent / "table1.csv")}
    assert float(table[("scratch", "paper")]["mape_mean"]) == pytest.approx(
        statistics.mean(float(r["mape"]) for r in parts), abs=1e-6)
    html = out.read_text()
    assert "joined from 2 parts" in html and "Complete: every planned result is in the store" in html
    assert "Part of a run" not in html
    # a part alone says that it is one, and which splits it holds
    assert "holds split(s) 0-1 of its protocol's 3" in (runs["p01"] / "report.html").read_text()


def test_a_split_held_twice_with_the_same_results_counts_once(runs, cli):
    out = runs["root"] / "twice" / "report.html"
    code, stdout, err = cli("report", str(runs["whole"]), str(runs["p2"]), "--out", str(out))
    assert code == 0, err
    assert (out.parent / "table1.csv").read_bytes() == (runs["whole"] / "table1.csv").read_bytes()


def test_a_split_held_twice_with_different_results_is_refused(runs, cli):
    other = runs["root"] / "p2-other"
    shutil.copytree(runs["p2"], other)
    db = sqlite3.connect(other / "store.sqlite")
    db.execute("UPDATE evals SET value = value + 0.5 WHERE metric = 'mape'")
    db.commit()
    db.close()
    code, out, err = cli("report", str(runs["p01"]), str(runs["p2"]), str(other), "--out",
                         str(runs["root"] / "bad" / "report.html"))
    assert code == 2 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert "different results" in err and "split 2" in err and str(other) in err
    assert not (runs["root"] / "bad").exists()


def test_parts_of_different_runs_are_refused_naming_the_difference(runs, cli):
    other = runs["root"] / "p2-epochs"
    shutil.copytree(runs["p2"], other)
    info = _info(other)
    info["protocol"]["epochs"] = 3
    (other / "run.json").write_text(json.dumps(info))
    code, out, err = cli("report", str(runs["p01"]), str(other), "--out", str(runs["root"] / "x" / "r.html"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "not parts of one run" in err and "protocol.epochs 2 ≠ 3" in err


@pytest.mark.parametrize("splits", ["3", "1-0", "a", "0-5"])
def test_only_splits_outside_the_protocol_is_one_line(cli, tmp_path, splits):
    code, out, err = cli("run", *GRID, "--only-splits", splits, "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--only-splits" in err
    assert not (tmp_path / "run").exists()
