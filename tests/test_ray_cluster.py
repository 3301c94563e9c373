"""``--executor ray --address`` against a real Ray head node that the test starts (``ray start --head``),
bound to 127.0.0.1 only and with token authentication (Ray 2.60 clusters require it): the results equal
an inline run's; a Ray worker killed in the middle of a task is a failed job, nothing stored is lost, and
the same command resumes and completes it. The head node is stopped at the end, even on failure.

Loopback only: Ray turns ``--node-ip-address 127.0.0.1`` into the machine's external address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (see ``paraisite_executors.ray_tasks._loopback_only``); the head
node is started with it and the launcher's executor sets it itself for a 127.0.0.1 address."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import REPO, TESTS, model_rows

pytest.importorskip("ray", reason="the test extra installs ray")

GRID = ["--preset", "quick", "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
        "--splits", "1", "--epochs", "2", "--threads", "1", "--no-progress", "--baselines",
        "none"]
COMPARED = ("backbone", "strategy", "train", "test", "split", "mape", "n_test", "epoch", "selection",
            "stage_key")
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")


def _rows(path):
    return sorted(tuple(r[c] for c in COMPARED) for r in csv.DictReader(open(path)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Head:
    """A Ray head node on 127.0.0.1, run by ``ray start --head --block`` in its own session."""

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="pbray", dir="/tmp"))  # short: Ray's socket paths
        self.sleepy = self.root / "sleepy"
        self.sleepy.mkdir()
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.token = secrets.token_hex(32)  # as `ray get-auth-token --generate` makes one
        self.cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                    "--node-ip-address", "127.0.0.1", "--port", str(self.port), "--num-cpus", "2",
                    "--include-dashboard", "false", "--disable-usage-stats",
                    "--temp-dir", str(self.root / "r")]
        env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PB_SLEEPY_DIR=str(self.sleepy),
                   PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), **self.auth())
        self.log = open(self.root / "head.log", "w")
        self.proc = subprocess.Popen(self.cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.root)

    def auth(self) -> dict:
        """How a client authenticates: the token in the environment (or in ~/.ray/auth_token)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def wait_ready(self, timeout=90) -> str | None:
        """None when the node is up, else why not."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            text = (self.root / "head.log").read_text()
            if "Ray runtime started" in text:
                return None
            if self.proc.poll() is not None:
                return f"exited {self.proc.returncode}: {text[-800:]}"
            time.sleep(0.2)
        return f"not up after {timeout} s: {(self.root / 'head.log').read_text()[-800:]}"

    def processes(self):
        import psutil

        try:
            top = psutil.Process(self.proc.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self):
        """Stop exactly this head node's processes (never `ray stop`, which stops every Ray instance
        on the machine, other runs' included): SIGTERM to `ray start --block` (it stops its node), then
        SIGKILL to whatever of its process tree or session is left."""
        procs = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        for p in procs:
            try:
                p.kill()
            except Exception:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def head():
    node = Head()
    try:
        why = node.wait_ready()
        if why is not None:
            pytest.skip(f"cannot start a Ray head node here ({' '.join(node.cmd)}): {why}")
        yield node
    finally:
        node.stop()


def _run(head, args, out, extra_env=None):
    env = {**os.environ, **head.auth(), **(extra_env or {}), "PYTHONPATH": str(TESTS)}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the executor must keep to loopback by itself
    return subprocess.Popen([sys.executable, "-m", "paraisite_bench.cli", "run", *args, "--executor", "ray",
                             "--address", head.address, "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_head_node_listens_on_loopback_only(head):
    listening = [(c.laddr.ip, c.laddr.port) for p in head.processes()
                 for c in p.net_connections(kind="inet") if c.status == "LISTEN"]
    assert any(port == head.port for _, port in listening), listening
    assert all(ip in LOOPBACK for ip, _ in listening), listening


def test_run_on_a_head_node_gives_the_inline_results(head, cli, tmp_path):
    code, _, err = cli("run", *GRID, "--out", str(tmp_path / "inline"))
    assert code == 0, err
    proc = _run(head, GRID, tmp_path / "ray")
    text, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "1 stages trained" in text
    assert _rows(tmp_path / "ray" / "results.csv") == _rows(tmp_path / "inline" / "results.csv")
    assert len(_rows(tmp_path / "inline" / "results.csv")) == 2  # the selected and the last epoch


def _done(db: Path) -> dict:
    try:
        con = sqlite3.connect(db, timeout=1)
        rows = dict(con.execute("SELECT key, checksum FROM stages WHERE status='done'").fetchall())
        con.close()
        return rows
    except sqlite3.OperationalError:
        return {}


def test_a_killed_ray_worker_is_a_failed_job_and_the_same_command_completes_it(head, tmp_path):
    """MEGNet and `sleepy` stages on the cluster; the worker building the sleepy model is SIGKILLed once
    the MEGNet stage is stored. The task is not retried (max_retries=0: the job is reported failed and a
    resumed run redoes it), the MEGNet stage stays stored, and the same command completes the grid."""
    args = [*GRID, "--plugin", "ray_plugins_for_tests", "--backbones", "megnet,sleepy", "--workers", "2"]
    out = tmp_path / "run"
    (head.sleepy / "release").unlink(missing_ok=True)
    proc = _run(head, args, out)
    try:
        t0 = time.time()
        while not ((head.sleepy / "pid").exists() and len(_done(out / "store.sqlite")) == 1):
            assert proc.poll() is None, proc.communicate()
            assert time.time() - t0 < 240, "the sleepy task never started"
            time.sleep(0.1)
        before = _done(out / "store.sqlite")
        os.kill(int((head.sleepy / "pid").read_text()), signal.SIGKILL)
        text, err = proc.communicate(timeout=120)
    finally:
        (head.sleepy / "release").touch()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err
    failed = [line.strip() for line in text.splitlines() if line.strip().startswith("FAILED")]
    assert len(failed) == 1, text
    assert failed[0].startswith("FAILED sleepy:random>dataset1#0: the Ray worker died during this job "
                                "(WorkerCrashedError") and "run the same command" in failed[0], text
    assert _done(out / "store.sqlite") == before  # nothing stored is lost
    con = sqlite3.connect(out / "store.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    assert [r["backbone"] for r in model_rows(out / "results.csv")] == ["megnet"]

    proc = _run(head, args, out)
    text, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "1 stages trained, 1 reused" in text
    after = _done(out / "store.sqlite")
    assert len(after) == 2 and before.items() <= after.items()
    assert sorted(r["backbone"] for r in model_rows(out / "results.csv")) == ["megnet", "sleepy"]
