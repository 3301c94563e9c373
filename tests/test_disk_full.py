"""A checkpoint write that fails because the disk is full: one clear line, the store stays consistent
(nothing marked done without its checkpoint, no temporary file left), and the same command resumes to the
table of an uninterrupted run.

The disk is really full for that one file: the checkpoint's temporary file (``<key>.tmp<pid>``, written by
this process: the inline executor) is made a symlink to ``/dev/full``, on which every write fails with
ENOSPC from the kernel, so ``checkpoint.save_checkpoint``'s own error path runs."""

from __future__ import annotations

import csv
import os
import sqlite3
from pathlib import Path

import pytest

ARGS = ["run", "--preset", "quick", "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
        "--splits", "1", "--epochs", "2", "--executor", "inline", "--no-progress", "--baselines", "none"]


def test_a_full_disk_during_a_checkpoint_write_is_one_line_and_resumable(cli, tmp_path):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this machine")
    straight = tmp_path / "straight"
    code, _, err = cli(*ARGS, "--out", str(straight))
    assert code == 0, err
    # one stage, read twice (paper and last)
    (key,) = {r["stage_key"] for r in csv.DictReader(open(straight / "results.csv"))}

    out = tmp_path / "full"
    ckpts = out / "checkpoints"
    ckpts.mkdir(parents=True)
    tmp = ckpts / f"{key}.tmp{os.getpid()}"
    tmp.symlink_to("/dev/full")
    code, text, err = cli(*ARGS, "--out", str(out))
    assert code == 1, err
    failed = [line.strip() for line in text.splitlines() if line.strip().startswith("FAILED")]
    assert failed == [f"FAILED megnet:random>dataset1#0: cannot write checkpoint {ckpts / key}.pt: "
                      "No space left on device — free space and run the same command to resume"], text
    assert "Traceback" not in text + err
    assert not tmp.is_symlink() and not tmp.exists()  # the temporary file is gone
    assert list(ckpts.iterdir()) == []
    con = sqlite3.connect(out / "store.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT count(*) FROM stages WHERE status='done'").fetchone() == (0,)
    con.close()

    code, text, err = cli(*ARGS, "--out", str(out))  # space freed: the same command
    assert code == 0, err
    assert "1 stages trained" in text
    assert (out / "table1.csv").read_bytes() == (straight / "table1.csv").read_bytes()
    con = sqlite3.connect(out / "store.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert con.execute("SELECT key FROM stages WHERE status='done'").fetchall() == [(key,)]
    assert sorted(p.name for p in ckpts.iterdir()) == [f"{key}.pt"]
