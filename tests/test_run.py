"""End-to-end runs on real data at small size: outputs, stage reuse, skipping finished jobs,
resuming after an interruption."""

from __future__ import annotations

import csv
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SMALL


def _csv(path):
    return list(csv.DictReader(open(path)))


@pytest.fixture(scope="module")
def grid(tmp_path_factory, data_dir, cache_dir):
    """One small real grid shared by the tests below: 3 strategies × {Dataset1, AFLOW subsample}."""
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("grid") / "run"
    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    # baselines have their own tests (test_baselines.py): this grid is the trained models'
    main(["run", *SMALL, "--train", "dataset1,aflow", "--test", "dataset1,aflow", "--baselines", "none",
          "--out", str(out)])
    return out


def test_outputs_cover_every_cell(grid):
    rows = _csv(grid / "results.csv")
    # scratch and pretrained: 2 train × 2 test × 2 splits; double: Dataset1 only (not AFLOW) × 2 × 2;
    # each read twice: at the selected epoch (paper) and at the last one
    assert len(rows) == 2 * (8 + 8 + 4)
    assert sorted(r["selection"] for r in rows) == ["last"] * 20 + ["paper"] * 20
    assert all(1 <= int(r["epoch"]) <= 2 and int(r["n_test"]) > 0 for r in rows)
    assert {int(r["epoch"]) for r in rows if r["selection"] == "last"} == {2}
    metrics = ("mape", "mae_log", "spearman", "r2_log")
    assert all(r[m] != "" for r in rows for m in metrics)
    assert {r["weights_loaded"] for r in rows if r["strategy"] != "scratch"} == {"106/106"}
    assert {r["weights_loaded"] for r in rows if r["strategy"] == "scratch"} == {""}
    for name in ("table1.csv", "curves.csv", "report.html", "store.sqlite", "run.json"):
        assert (grid / name).exists(), name


def test_table1_is_mean_and_std_of_results(grid):
    from scipy import stats

    groups = defaultdict(list)
    for r in _csv(grid / "results.csv"):
        for m in ("mape", "mae_log", "spearman", "r2_log"):
            groups[(r["strategy"], r["train"], r["test"], r["selection"], m)].append(float(r[m]))
    table = _csv(grid / "table1.csv")
    assert len(table) == len(groups) / 4 == 20
    for t in table:
        for m in ("mape", "mae_log", "spearman", "r2_log"):
            vals = groups[(t["strategy"], t["train"], t["test"], t["selection"], m)]
            assert float(t[f"{m}_mean"]) == pytest.approx(np.mean(vals), abs=1e-6)
            assert float(t[f"{m}_std"]) == pytest.approx(np.std(vals, ddof=1), abs=1e-6)
            low, high = stats.t.interval(0.95, len(vals) - 1, loc=np.mean(vals), scale=stats.sem(vals))
            assert (float(t[f"{m}_ci_low"]), float(t[f"{m}_ci_high"])) == pytest.approx((low, high), abs=1e-6)
        assert int(t["n_splits"]) == 2
    paper = {(t["strategy"], t["train"], t["test"]): t["paper_mean"]
             for t in table if t["selection"] == "paper"}
    assert paper[("double", "dataset1", "dataset1")] == "0.34"


def test_selected_epoch_is_the_best_validation_epoch(grid):
    """Paper mode: the reported own-dataset MAPE equals the minimum of the validation curve."""
    curves = defaultdict(dict)
    for c in _csv(grid / "curves.csv"):
        curves[c["stage_key"]][int(c["epoch"])] = float(c["val_mape"])
    for r in _csv(grid / "results.csv"):
        if r["train"] == r["test"]:
            curve = curves[r["stage_key"]]
            # paper: the minimum of the validation curve; last: its final value
            expected = min(curve.values()) if r["selection"] == "paper" else curve[max(curve)]
            assert float(r["mape"]) == pytest.approx(expected, rel=1e-5)
            assert curve[int(r["epoch"])] == expected


def test_the_aflow_stage_is_trained_once_and_shared(grid):
    rows = _csv(grid / "results.csv")
    db = sqlite3.connect(grid / "store.sqlite")
    stages = db.execute("SELECT key, spec FROM stages WHERE status='done'").fetchall()
    import json

    specs = {k: json.loads(s) for k, s in stages}
    # per split: scratch×2, pretrained×2 (one of them the AFLOW stage), double's Dataset1 stage
    assert len(specs) == 10
    for split in (0, 1):
        aflow_pre = [k for k, s in specs.items() if s["dataset"] == "aflow" and s["init"] == "weights:eform"
                     and s["split"] == split]
        assert len(aflow_pre) == 1
        pre_row = [r for r in rows if r["strategy"] == "pretrained" and r["train"] == "aflow"
                   and r["split"] == str(split)]
        assert {r["stage_key"] for r in pre_row} == set(aflow_pre)
        dbl = [r for r in rows if r["strategy"] == "double" and r["split"] == str(split)]
        assert {specs[r["stage_key"]]["parent"] for r in dbl} == set(aflow_pre)


def test_rerun_skips_finished_jobs_and_gives_the_same_table(grid, cli):
    before = (grid / "table1.csv").read_text()
    code, out, err = cli("run", *SMALL, "--train", "dataset1,aflow", "--test", "dataset1,aflow",
                         "--baselines", "none", "--out", str(grid))
    assert code == 0, err
    assert "0 stages trained, 10 reused" in out
    assert (grid / "table1.csv").read_text() == before


def test_report_command_rebuilds_outputs_without_training(grid, cli):
    (grid / "table1.csv").unlink()
    code, out, _ = cli("report", str(grid))
    assert code == 0 and "40 results" in out
    assert len(_csv(grid / "table1.csv")) == 20
    html = (grid / "report.html").read_text()
    assert 'data-strategy="double" data-train="dataset1" data-test="dataset1"' in html
    assert "No published weights loaded" in html  # the paper's note (a), in the notes' legend


def _spawn(args, env):
    return subprocess.Popen([sys.executable, "-m", "paraisite_bench.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _wait_for_done_stages(db_path: Path, n: int, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it could be interrupted: {proc.communicate()}")
        if db_path.exists():
            try:
                con = sqlite3.connect(db_path, timeout=1)
                done = con.execute("SELECT count(*) FROM stages WHERE status='done'").fetchone()[0]
                con.close()
                if done >= n:
                    return done
            except sqlite3.OperationalError:
                pass
        time.sleep(0.1)
    raise AssertionError("no stage finished in time")


@pytest.mark.parametrize("sig, workers", [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGKILL, 2)])
def test_resume_after_interruption_gives_the_same_table(tmp_path, sig, workers, cli):
    import psutil

    args = ["run", "--preset", "quick", "--strategies", "scratch,pretrained", "--train", "dataset1",
            "--test", "dataset1", "--splits", "3", "--epochs", "8", "--no-progress",
            "--workers", str(workers)]
    env = dict(os.environ)
    interrupted = tmp_path / "interrupted"
    proc = _spawn([*args, "--out", str(interrupted)], env)
    _wait_for_done_stages(interrupted / "store.sqlite", 2, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= (workers if workers > 1 else 0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, "worker processes outlived their killed parent"
    if sig == signal.SIGINT:
        assert "Traceback" not in err and "run the same command to resume" in err
    con = sqlite3.connect(interrupted / "store.sqlite")
    done_before = {k for (k,) in con.execute("SELECT key FROM stages WHERE status='done'")}
    con.close()
    assert 2 <= len(done_before) < 6

    code, out, err = cli(*args, "--out", str(interrupted))
    assert code == 0, err
    assert f"{6 - len(done_before)} stages trained, {len(done_before)} reused" in out
    code, _, err = cli(*args, "--out", str(tmp_path / "straight"))
    assert code == 0, err
    assert (interrupted / "table1.csv").read_text() == (tmp_path / "straight" / "table1.csv").read_text()


def test_heldout_mode_selects_on_training_data_and_reports_on_the_untouched_part(cli, tmp_path):
    out = tmp_path / "heldout"
    code, _, err = cli("run", *SMALL, "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
                       "--splits", "1", "--epochs", "3", "--selection", "HELDOUT", "--baselines", "none",
                       "--out", str(out))
    assert code == 0, err
    (row,) = _csv(out / "results.csv")
    assert row["selection"] == "heldout" and int(row["n_test"]) == 19
    import json

    info = json.loads((out / "run.json").read_text())
    assert info["protocol"]["scaler_fit"] == "train"
    con = sqlite3.connect(out / "store.sqlite")
    n_train, n_val = con.execute("SELECT n_train, n_val FROM stages").fetchone()
    assert (n_train, n_val) == (61, 15)  # the inner parts of the 76 training records
    table = _csv(out / "table1.csv")
    assert table[0]["selection"] == "heldout"


def test_a_corrupted_checkpoint_is_retrained_not_used(grid, cli):
    import json

    rows = _csv(grid / "results.csv")
    key = next(r["stage_key"] for r in rows if r["strategy"] == "scratch" and r["train"] == "dataset1")
    ckpt = grid / "checkpoints" / f"{key}.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # a partial file, as a crash mid-write would leave
    before = (grid / "table1.csv").read_text()
    code, out, err = cli("run", *SMALL, "--train", "dataset1,aflow", "--test", "dataset1,aflow",
                         "--baselines", "none", "--out", str(grid))
    assert code == 0, err
    assert "1 stages trained, 9 reused" in out
    assert (grid / "table1.csv").read_text() == before  # retraining is deterministic
    assert json.loads((grid / "run.json").read_text())["finished"]
