"""Executors on real data at small size: parallel workers and a real local Ray instance give the same
results.csv as a serial run; --device and --early-stop."""

from __future__ import annotations

import csv
import json
import sqlite3

import pytest
import torch
from conftest import SMALL

#: scratch + double on Dataset1 (double depends on the AFLOW stage of the same split), 1 split; every run
#: trains its AFLOW stage (no stage cache), so that parallel and serial training are compared.
GRID = [*SMALL, "--strategies", "scratch,double", "--train", "dataset1", "--test", "dataset1,aflow",
        "--splits", "1", "--baselines", "none", "--no-stage-cache"]
COMPARED = ("backbone", "strategy", "train", "test", "split", "mape", "n_test", "epoch", "selection", "chain",
            "stage_key")


def _rows(path):
    return sorted((tuple(r[c] for c in COMPARED) for r in csv.DictReader(open(path))))


@pytest.fixture(scope="module")
def serial(tmp_path_factory, data_dir, cache_dir):
    import os

    from paraisite_bench.cli import main

    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    out = tmp_path_factory.mktemp("serial") / "run"
    main(["run", *GRID, "--out", str(out)])
    return out


def test_parallel_workers_give_the_serial_results(serial, cli, tmp_path):
    code, out, err = cli("run", *GRID, "--workers", "2", "--threads", "1", "--out", str(tmp_path / "par"))
    assert code == 0, err
    assert "3 stages trained" in out
    assert _rows(tmp_path / "par" / "results.csv") == _rows(serial / "results.csv")
    assert len(_rows(serial / "results.csv")) == 2 * 4  # read at the selected and at the last epoch


def test_ray_executor_gives_the_local_results_and_ships_checkpoints_back(serial, cli, tmp_path):
    pytest.importorskip("ray", reason="the test extra installs ray")
    import ray

    out = tmp_path / "ray"
    code, text, err = cli("run", *GRID, "--executor", "ray", "--workers", "2", "--out", str(out))
    assert code == 0, err
    assert _rows(out / "results.csv") == _rows(serial / "results.csv")
    # every trained stage's checkpoint is in the launching machine's store and matches its checksum
    from paraisite_bench.checkpoint import checkpoint_digest

    con = sqlite3.connect(out / "store.sqlite")
    rows = con.execute("SELECT key, checksum FROM stages WHERE status='done'").fetchall()
    assert len(rows) == 3
    for key, checksum in rows:
        assert checkpoint_digest(out / "checkpoints" / f"{key}.pt") == checksum
    assert json.loads((out / "run.json").read_text())["executor"] == "ray"
    assert not ray.is_initialized()  # the private local instance was shut down


def test_ray_executor_reuses_finished_stages_and_evaluates_from_shipped_checkpoints(serial, cli, tmp_path):
    """Resume a finished run with a new test dataset on Ray: no training, evaluations only (the
    worker gets the stored checkpoints as bytes)."""
    pytest.importorskip("ray")
    import shutil

    out = tmp_path / "resume"
    shutil.copytree(serial, out)
    args = [a if a != "dataset1,aflow" else "dataset1,aflow,dataset2" for a in GRID]
    code, text, err = cli("run", *args, "--executor", "ray", "--workers", "2", "--out", str(out))
    assert code == 0, err
    assert "0 stages trained, 3 reused" in text
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["test"] for r in rows} == {"dataset1", "aflow", "dataset2"}
    old = {k for k in _rows(serial / "results.csv")}
    assert old <= {tuple(r[c] for c in COMPARED) for r in rows}


@pytest.mark.parametrize("executor", ["ray", "local"])
def test_the_compile_setting_reaches_the_workers(cli, tmp_path, monkeypatch, executor):
    """`--compile on` in the launcher: Ray tasks and local worker processes compile their stage (and say so
    in the store); run.json records the setting. (`auto` leaves these 2-epoch stages eager: see
    test_speed.)"""
    if executor == "ray":
        pytest.importorskip("ray")
    # restored after the test (the CLI sets it in-process)
    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", "off")
    out = tmp_path / executor
    args = [*SMALL, "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1", "--splits", "2",
            "--workers", "2", "--compile", "on", "--out", str(out)]
    code, text, err = cli("run", *args, *(["--executor", "ray"] if executor == "ray" else []))
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["compile"] == "on"
    con = sqlite3.connect(out / "store.sqlite")
    infos = [json.loads(w) for (w,) in con.execute("SELECT weights_info FROM stages WHERE status='done'")]
    assert len(infos) == 2
    assert all(i.get("accelerated", "").startswith("torch.compile") for i in infos), infos


def test_device_cuda_without_a_gpu_is_one_clear_line(cli, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, out, err = cli("run", *GRID, "--device", "cuda", "--out", str(tmp_path / "cuda"))
    assert code == 2
    assert err.count("\n") == 1 and "--device cuda" in err and "--device cpu" in err
    assert not (tmp_path / "cuda" / "store.sqlite").exists()


def test_device_auto_picks_cpu_without_a_gpu(serial):
    from paraisite_bench.executors import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected
    assert json.loads((serial / "run.json").read_text())["device"] == expected


def test_address_without_ray_is_a_user_error(cli, tmp_path):
    code, _, err = cli("run", *GRID, "--address", "127.0.0.1:6379", "--out", str(tmp_path / "x"))
    assert code == 2 and "--executor ray" in err


def test_early_stop_is_off_by_default_and_part_of_the_key_when_on(serial, cli, tmp_path):
    from paraisite_bench.protocol import Protocol

    assert "early_stop" not in Protocol().training_options("aflow")
    assert Protocol(early_stop=3).training_options("aflow")["early_stop"] == 3
    out = tmp_path / "es"
    code, text, err = cli("run", *SMALL, "--strategies", "scratch", "--train", "dataset1",
                          "--test", "dataset1", "--splits", "1", "--epochs", "12", "--early-stop", "1",
                          "--out", str(out))
    assert code == 0, err
    assert "early stopping was ON (patience 1 epochs)" in text
    info = json.loads((out / "run.json").read_text())
    assert info["early_stop"] == 1 and info["protocol"]["early_stop"] == 1
    assert "early_stop" in (out / "report.html").read_text()
    con = sqlite3.connect(out / "store.sqlite")
    key, curves, best = con.execute("SELECT key, curves, best_epoch FROM stages").fetchone()
    curves = json.loads(curves)
    vals = [c["val_mape"] for c in curves]
    # it stopped one epoch after the best, or ran all 12 epochs improving every time
    assert len(curves) == 12 or len(curves) == best + 1
    assert vals[best - 1] == min(vals)
    assert key not in {r[-1] for r in _rows(serial / "results.csv")}


def test_a_private_ray_instance_binds_to_loopback_only(data_dir, cache_dir):
    """Ray would put a private instance on the machine's external address: the executor keeps it on
    127.0.0.1 (every node, and every socket its processes listen on), and restores Ray's switch after."""
    pytest.importorskip("ray")
    import psutil
    import ray
    from paraisite_executors.ray_tasks import RayExecutor
    from ray._private import ray_constants

    from paraisite_bench.protocol import Protocol
    from paraisite_bench.worker import WorkerSetup

    ex = RayExecutor(WorkerSetup(data_dir, cache_dir, Protocol()), workers=1)
    try:
        assert ray.get(ray.remote(lambda: 1).remote()) == 1
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        listening = [c.laddr.ip for p in psutil.Process().children(recursive=True)
                     for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
        assert listening and set(listening) <= {"127.0.0.1", "::ffff:127.0.0.1"}, listening
        assert ray_constants.ENABLE_RAY_CLUSTER is True
    finally:
        ex.shutdown()
    assert not ray.is_initialized()
