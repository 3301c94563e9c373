"""The results store: an embedded SQLite database keyed by job hashes, plus checkpoint files."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from pathlib import Path

from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS stages (
    key TEXT PRIMARY KEY, spec TEXT NOT NULL, status TEXT NOT NULL,
    best_epoch INTEGER, best_val REAL, n_train INTEGER, n_val INTEGER,
    weights_info TEXT, curves TEXT, checkpoint TEXT, checksum TEXT,
    wall_s REAL, finished TEXT, error TEXT, origin TEXT
);
"""
#: where a done stage's checkpoint came from: trained by this run directory, or taken from the stage cache
ORIGINS = ("trained", "cache")
EVALS_TABLE = """
CREATE TABLE IF NOT EXISTS evals (
    stage_key TEXT NOT NULL, test TEXT NOT NULL, selection TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    n_test INTEGER, epoch INTEGER, finished TEXT, PRIMARY KEY (stage_key, test, selection, metric)
)"""


def _real(value) -> float | None:
    """A metric as SQLite keeps it: NaN (an undefined correlation) becomes NULL."""
    return None if value is None or value != value else float(value)

#: Results of baselines (:mod:`paraisite_bench.baselines`), one row per (baseline, train, test, split) key;
#: ``metrics``: JSON of {metric name: value}.
BASELINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS baselines (
    key TEXT PRIMARY KEY, baseline TEXT NOT NULL, train TEXT NOT NULL, test TEXT NOT NULL,
    split INTEGER NOT NULL, n_test INTEGER, metrics TEXT NOT NULL, finished TEXT
);
"""


class Store:
    """Stage results and evaluations. Each write is its own transaction, so an interrupted run
    loses at most the jobs in flight.

    One run directory serves one command at a time: the store holds an exclusive advisory lock
    (``flock`` on ``store.lock``) while it is open, and a second command on the same directory is
    refused with one line (:class:`UserError`) before it writes anything. The kernel drops the lock
    when its process dies, even by SIGKILL, so a killed run never blocks its own resumption.
    Below the lock, SQLite's WAL mode and busy timeout keep concurrent writers (``lock=False``)
    from corrupting the database."""

    def __init__(self, path: Path, lock: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.checkpoint_dir = self.path.parent / "checkpoints"
        self._lock_fh = self._acquire_lock() if lock else None
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._set_wal(deadline=time.time() + 60)
        self._upgrade()
        self.db.executescript(SCHEMA)
        self.db.executescript(BASELINE_SCHEMA)
        self.db.execute(EVALS_TABLE)

    @classmethod
    def read_only(cls, path: Path) -> "Store":
        """A view of the store at ``path`` that writes nothing (no lock, no directory, no schema change), for
        ``run --dry-run``: the file opened read-only, or an empty store in memory when there is none."""
        view = cls.__new__(cls)
        view.path = Path(path)
        view.checkpoint_dir = view.path.parent / "checkpoints"
        view._lock_fh = None
        if view.path.exists():
            # without a write-ahead log (a store closed cleanly) the file alone is the store: "immutable"
            # reads it without creating the -wal and -shm files a read-only connection would leave behind
            wal = view.path.with_name(view.path.name + "-wal").exists()
            mode = "mode=ro" if wal else "immutable=1"
            view.db = sqlite3.connect(f"{view.path.resolve().as_uri()}?{mode}", uri=True, timeout=60)
        else:
            view.db = sqlite3.connect(":memory:")
            view.db.executescript(SCHEMA + BASELINE_SCHEMA)
            view.db.execute(EVALS_TABLE)
        return view

    def _upgrade(self) -> None:
        self._upgrade_evals()
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(stages)")]
        if cols and "origin" not in cols:  # a store written before the stage cache
            self.db.execute("ALTER TABLE stages ADD COLUMN origin TEXT")

    def _upgrade_evals(self) -> None:
        """Older stores held one metric per (stage, test): MAPE in a ``mape`` column, later
        ``(metric, value)``. Their evaluations are moved to the current table as the stage's selected
        reading; the runner then evaluates the metrics and readings they lack from the checkpoints."""
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(evals)")]
        if not cols or "selection" in cols:
            return
        metric = "metric" if "metric" in cols else "'mape'"
        value = "value" if "value" in cols else "mape"
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("ALTER TABLE evals RENAME TO evals_old")
            self.db.execute(EVALS_TABLE)
            self.db.execute(
                f"INSERT INTO evals SELECT e.stage_key, e.test, "
                f"COALESCE(json_extract(s.spec, '$.options.selection'), 'paper'), {metric}, {value}, "
                f"e.n_test, s.best_epoch, e.finished "
                f"FROM evals_old e LEFT JOIN stages s ON s.key = e.stage_key")
            self.db.execute("DROP TABLE evals_old")

    def _set_wal(self, deadline: float) -> None:
        # Switching a new database to WAL takes an exclusive lock and SQLite's busy timeout does not
        # cover it: two processes creating one store at once get "database is locked". Retry.
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.time() > deadline:
                    raise
                time.sleep(0.05)

    def _acquire_lock(self):
        lock_path = self.path.with_suffix(".lock")
        fh = open(lock_path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise UserError(f"run directory {self.path.parent} is in use by another paraisite-bench command "
                            f"({holder}): wait for it to finish, or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
        fh.flush()
        return fh

    def close(self) -> None:
        self.db.close()
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    def checkpoint_path(self, key: str) -> Path:
        return self.checkpoint_dir / f"{key}.pt"

    def stage(self, key: str) -> dict | None:
        cols = ["key", "spec", "status", "best_epoch", "best_val", "n_train", "n_val", "weights_info",
                "curves", "checkpoint", "checksum", "wall_s", "finished", "error", "origin"]
        row = self.db.execute(f"SELECT {', '.join(cols)} FROM stages WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        d = dict(zip(cols, row))
        for c in ("spec", "weights_info", "curves"):
            d[c] = json.loads(d[c]) if d[c] else None
        return d

    def done(self, key: str) -> bool:
        row = self.stage(key)
        return bool(row and row["status"] == "done" and self.checkpoint_path(key).exists())

    def save_stage(self, spec: dict, summary: dict, checksum: str, origin: str = "trained") -> None:
        """A done stage: its spec, training summary and checkpoint checksum; ``origin`` (:data:`ORIGINS`)
        says whether this run directory trained it or took it from the stage cache."""
        self.db.execute(
            "INSERT OR REPLACE INTO stages VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (spec["key"], json.dumps(spec), "done", summary["best_epoch"], summary["best_val"],
             summary["n_train"], summary["n_val"], json.dumps(summary["weights_info"]),
             json.dumps(summary["curves"]), self.checkpoint_path(spec["key"]).name, checksum,
             summary["wall_s"], time.strftime("%Y-%m-%dT%H:%M:%S"), None, origin))

    def save_failure(self, spec: dict, error: str) -> None:
        """A job failed. A stage already trained stays done (its checkpoint and evaluations are kept and
        still reported) and carries the error of the evaluation that failed; any other stage is failed."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.db:
            self.db.execute("BEGIN")
            kept = self.db.execute("UPDATE stages SET error=? WHERE key=? AND status='done'",
                                   (error, spec["key"])).rowcount
            if not kept:
                self.db.execute("INSERT OR REPLACE INTO stages (key, spec, status, error, finished) "
                                "VALUES (?,?,?,?,?)", (spec["key"], json.dumps(spec), "failed", error, now))

    def evals(self, key: str) -> dict[str, dict[str, dict]]:
        """test dataset -> selection mode -> {"metrics": {name: value}, "n_test", "epoch"} of one stage."""
        rows = self.db.execute("SELECT test, selection, metric, value, n_test, epoch FROM evals "
                               "WHERE stage_key=? ORDER BY rowid", (key,)).fetchall()
        out: dict[str, dict[str, dict]] = {}
        for test, selection, metric, value, n_test, epoch in rows:
            reading = out.setdefault(test, {}).setdefault(
                selection, {"metrics": {}, "n_test": n_test, "epoch": epoch})
            reading["metrics"][metric] = value
        return out

    def save_evals(self, key: str, results: list[dict]) -> None:
        """Store evaluations ``{"test", "selection", "metrics": {name: value}, "n_test", "epoch"}``."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.db:
            self.db.execute("BEGIN")
            for r in results:
                for metric, value in r["metrics"].items():
                    self.db.execute("INSERT OR REPLACE INTO evals VALUES (?,?,?,?,?,?,?,?)",
                                    (key, r["test"], r["selection"], metric, _real(value), r["n_test"],
                                     r.get("epoch"), now))
            self.db.execute("UPDATE stages SET error=NULL WHERE key=? AND status='done'", (key,))

    def save_baselines(self, results: list[dict]) -> None:
        """Store baseline results (:func:`paraisite_bench.baselines.baseline_results`), in one transaction."""
        now = time.strftime("%Y-%m-%dT%H:%M:%S")
        with self.db:
            self.db.execute("BEGIN")
            for r in results:
                self.db.execute("INSERT OR REPLACE INTO baselines VALUES (?,?,?,?,?,?,?,?)",
                                (r["key"], r["baseline"], r["train"], r["test"], int(r["split"]), r["n_test"],
                                 json.dumps({m: _real(v) for m, v in r["metrics"].items()}), now))

    def baselines(self) -> list[dict]:
        """Every stored baseline result: ``{"key", "baseline", "train", "test", "split", "n_test", "metrics":
        {metric name: value, None where undefined (the Spearman correlation of a constant)}, "finished"}``,
        by baseline, train, test and split."""
        cols = ["key", "baseline", "train", "test", "split", "n_test", "metrics", "finished"]
        rows = self.db.execute(f"SELECT {', '.join(cols)} FROM baselines "
                               "ORDER BY baseline, train, test, split").fetchall()
        return [dict(zip(cols, row), metrics=json.loads(row[6])) for row in rows]
