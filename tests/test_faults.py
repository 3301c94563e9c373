"""Faults: a run killed in the middle of a job resumes to the same table; the same command twice
gives the same results; two commands on one run directory do not corrupt its store; a corrupted
or partial checkpoint (or feature cache) is detected and recomputed, never used."""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

#: 4 stages (scratch and pretrained × 2 splits) of Dataset1, 6 epochs: long enough to kill mid-job.
ARGS = ["run", "--preset", "quick", "--strategies", "scratch,pretrained", "--train", "dataset1",
        "--test", "dataset1", "--splits", "2", "--epochs", "6", "--threads", "1", "--no-progress"]


def _spawn(args, env=None):
    return subprocess.Popen([sys.executable, "-m", "paraisite_bench.cli", *args], env=env or dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _done(db: Path) -> dict[str, str]:
    """key -> checkpoint checksum of every finished stage."""
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(db, timeout=1)
        rows = con.execute("SELECT key, checksum FROM stages WHERE status='done'").fetchall()
        con.close()
        return dict(rows)
    except sqlite3.OperationalError:
        return {}


def _wait(cond, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended too early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir, cache_dir):
    """The uninterrupted run, in this process."""
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("straight") / "run"
    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    main([*ARGS, "--out", str(out)])
    return out


def test_same_command_twice_gives_identical_results(straight, tmp_path):
    """Determinism on CPU: a second process, with its own (cold) feature cache, writes byte-equal
    results.csv, table1.csv and curves.csv (none of them has a wall-time or timestamp column;
    those live in run.json and the store only)."""
    env = dict(os.environ, PARAISITE_BENCH_CACHE=str(tmp_path / "cold-cache"))
    proc = _spawn([*ARGS, "--out", str(tmp_path / "again")], env)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    for name in ("results.csv", "table1.csv", "curves.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (straight / name).read_bytes(), name
    header = (straight / "results.csv").read_text().splitlines()[0]
    assert "wall" not in header and "time" not in header and "finished" not in header


def test_sigkill_in_the_middle_of_a_job_then_resume(straight, tmp_path):
    out = tmp_path / "killed"
    proc = _spawn([*ARGS, "--out", str(out)])
    _wait(lambda: len(_done(out / "store.sqlite")) >= 1, proc)
    time.sleep(0.3)  # the next job is now training (each takes seconds)
    finished = _done(out / "store.sqlite")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 1 <= len(finished) < 4, "the kill must land in the middle of the run"
    assert _done(out / "store.sqlite") == finished  # the job in flight left nothing behind
    mtimes = {k: (out / "checkpoints" / f"{k}.pt").stat().st_mtime_ns for k in finished}

    proc = _spawn([*ARGS, "--out", str(out)])
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert f"{4 - len(finished)} stages trained, {len(finished)} reused" in stdout
    # finished jobs were not re-run: their checkpoints are the very same files
    assert {k: (out / "checkpoints" / f"{k}.pt").stat().st_mtime_ns for k in finished} == mtimes
    assert {k: v for k, v in _done(out / "store.sqlite").items() if k in finished} == finished
    assert not list((out / "checkpoints").glob("*.tmp*")), "a partial checkpoint was left behind"
    assert (out / "table1.csv").read_bytes() == (straight / "table1.csv").read_bytes()
    assert (out / "results.csv").read_bytes() == (straight / "results.csv").read_bytes()


def test_a_second_command_on_a_busy_run_directory_is_refused(straight, tmp_path, cli):
    """Decision: one run directory serves one command at a time. The second command is refused with
    one line (exit 2) before it writes anything; the first finishes with an intact store; the same
    command afterwards reuses everything."""
    out = tmp_path / "busy"
    proc = _spawn([*ARGS, "--out", str(out)])
    _wait(lambda: (out / "run.json").exists() and "pid" in (out / "store.lock").read_text(), proc)
    code, _, err = cli(*ARGS, "--out", str(out))
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert f"run directory {out} is in use by another paraisite-bench command (pid {proc.pid}" in lines[0]
    code, _, err = cli("report", str(out))  # rewriting the outputs meanwhile is refused as well
    assert code == 2 and "is in use" in err
    stdout, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "4 stages trained, 0 reused" in stdout
    con = sqlite3.connect(out / "store.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert (out / "table1.csv").read_bytes() == (straight / "table1.csv").read_bytes()
    code, stdout, err = cli(*ARGS, "--out", str(out))
    assert code == 0, err
    assert "0 stages trained, 4 reused" in stdout


def _hammer(path: str, writer: int, n: int, barrier) -> None:
    from paraisite_bench.store import Store

    barrier.wait()  # every writer creates/opens the store at the same moment
    store = Store(Path(path), lock=False)
    for i in range(n):
        spec = {"key": f"w{writer}-{i}", "label": "x"}
        store.save_stage(spec, {"best_epoch": 1, "best_val": 0.5, "n_train": 1, "n_val": 1,
                                "weights_info": {}, "curves": [{"epoch": 1}], "wall_s": 0.0}, "digest")
        store.save_evals(spec["key"], [
            {"test": "dataset1", "selection": "paper", "metrics": {"mape": 0.1, "spearman": 0.5},
             "n_test": 3},
            {"test": "dataset2", "selection": "last", "metrics": {"mape": 0.2}, "n_test": 4}])
    store.close()


def test_concurrent_writers_below_the_lock_do_not_corrupt_the_store(tmp_path):
    """Without the directory lock, processes creating and writing one SQLite store at once lose nothing
    (WAL + busy timeout; this test caught the WAL switch of a new database failing with 'database is
    locked')."""
    path = tmp_path / "store.sqlite"
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_hammer, args=(str(path), w, 150, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM stages WHERE status='done'").fetchone() == (600,)
    assert con.execute("SELECT count(*) FROM evals").fetchone() == (1800,)  # 3 metric values a stage


def test_the_store_lock_is_released_on_close_and_by_a_killed_process(tmp_path):
    from paraisite_bench.errors import UserError
    from paraisite_bench.store import Store

    path = tmp_path / "run" / "store.sqlite"
    first = Store(path)
    with pytest.raises(UserError, match="is in use by another paraisite-bench command"):
        Store(path)
    first.close()
    Store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path;"
                               "from paraisite_bench.store import Store; s = Store(Path(sys.argv[1]));"
                               "print('locked', flush=True); time.sleep(60)", str(path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(UserError, match=f"pid {holder.pid}"):
        Store(path)
    holder.kill()
    holder.wait()
    Store(path).close()


# ---- corrupted checkpoints and caches ---------------------------------------------------------

SMALL_RUN = ["run", "--preset", "quick", "--strategies", "scratch", "--train", "dataset1",
             "--test", "dataset1", "--splits", "2", "--epochs", "2", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_dir, cache_dir):
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("small") / "run"
    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    main([*SMALL_RUN, "--out", str(out)])
    return out


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip_a_byte(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _truncate,                              # a partial file (crash mid-copy)
    _flip_a_byte,                           # same size, one bit pattern changed (unloadable or not)
    lambda p: p.write_bytes(b""),           # an empty file
    lambda p: p.unlink(),                   # a missing file
    lambda p: p.write_bytes(b"not a torch checkpoint"),
], ids=["truncated", "flipped-byte", "empty", "missing", "garbage"])
def test_a_damaged_checkpoint_is_detected_and_the_job_rerun(small_run, tmp_path, cli, damage):
    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    key = next(r["stage_key"] for r in csv.DictReader(open(out / "results.csv")) if r["split"] == "1")
    damage(out / "checkpoints" / f"{key}.pt")
    code, stdout, err = cli(*SMALL_RUN, "--out", str(out))
    assert code == 0, err
    assert "1 stages trained, 1 reused" in stdout
    assert _done(out / "store.sqlite") == _done(small_run / "store.sqlite")  # retrained to the same bytes
    assert (out / "table1.csv").read_bytes() == (small_run / "table1.csv").read_bytes()


def test_a_damaged_feature_cache_is_recomputed(small_run, tmp_path, cli):
    cache = tmp_path / "cache"
    code, _, err = cli(*SMALL_RUN, "--cache-dir", str(cache), "--out", str(tmp_path / "a"))
    assert code == 0, err
    (feature_file,) = (cache / "features").glob("megnet-dataset1-*.pt")
    _truncate(feature_file)
    code, stdout, err = cli(*SMALL_RUN, "--cache-dir", str(cache), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "2 stages trained" in stdout
    assert (tmp_path / "b" / "results.csv").read_bytes() == (small_run / "results.csv").read_bytes()
    import torch

    assert torch.load(feature_file, weights_only=False)["features"]  # rewritten whole


def test_a_failed_evaluation_of_a_finished_stage_loses_nothing_stored(tmp_path):
    """A reused stage whose new evaluation fails (e.g. a test set added later) stays done with its
    checkpoint and earlier evaluations, carries the error, and is listed in failures.csv; a stage that
    never trained is failed; a later successful evaluation clears the error."""
    from paraisite_bench.outputs import write_failures
    from paraisite_bench.results import stage_rows
    from paraisite_bench.store import Store

    store = Store(tmp_path / "store.sqlite")
    trained = {"key": "k1", "label": "megnet:random>dataset1#0", "backbone": "megnet", "init": "random",
               "dataset": "dataset1", "split": 0, "options": {"epochs": 2}}
    summary = {"best_epoch": 2, "best_val": 0.5, "n_train": 76, "n_val": 19, "weights_info": {},
               "curves": [{"epoch": 1}], "wall_s": 1.0}
    store.save_stage(trained, summary, "digest")
    first = {"test": "dataset1", "selection": "paper", "metrics": {"mape": 0.5}, "n_test": 19, "epoch": 2}
    store.save_evals("k1", [first])
    store.save_failure(trained, "RuntimeError: size mismatch")
    store.save_failure(dict(trained, key="k2", label="megnet:random>dataset2#0"), "RuntimeError: boom")

    row = store.stage("k1")
    assert (row["status"], row["error"], row["checksum"]) == ("done", "RuntimeError: size mismatch", "digest")
    assert store.evals("k1") == {"dataset1": {"paper": {"metrics": {"mape": 0.5}, "n_test": 19, "epoch": 2}}}
    assert store.stage("k2")["status"] == "failed"
    write_failures(tmp_path, stage_rows(["k1", "k2"], store))
    listed = list(csv.DictReader(open(tmp_path / "failures.csv")))
    assert [(r["label"], r["error"]) for r in listed] == [
        ("megnet:random>dataset1#0", "RuntimeError: size mismatch"),
        ("megnet:random>dataset2#0", "RuntimeError: boom")]
    store.save_evals("k1", [dict(first, test="dataset2", metrics={"mape": 0.4})])
    assert store.stage("k1")["error"] is None and set(store.evals("k1")) == {"dataset1", "dataset2"}
    store.close()
