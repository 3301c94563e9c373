"""The stage cache shared by run directories: a pretraining stage trained by one run is taken by the next
one with the same key (same checkpoint bytes, same results), recorded in run.json; a damaged entry is
detected by its checksum and trained again; --no-stage-cache trains everything."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3

import pytest
from conftest import SMALL

#: Step 3 on Dataset1 with a 60-structure AFLOW stage: the AFLOW stage is the one other stages build on.
DOUBLE = ["run", *SMALL, "--splits", "1", "--strategies", "double", "--train", "dataset1",
          "--test", "dataset1", "--baselines", "none"]


def _origins(run) -> dict[str, str]:
    db = sqlite3.connect(run / "store.sqlite")
    rows = db.execute("SELECT json_extract(spec, '$.dataset'), origin FROM stages").fetchall()
    db.close()
    return dict(rows)


def _mapes(run) -> list[str]:
    with open(run / "results.csv", newline="") as fh:
        return [r["mape"] for r in csv.DictReader(fh)]


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def stage_cache(tmp_path):
    return tmp_path / "cache"


def test_second_run_takes_the_pretraining_stage_from_the_cache(cli, tmp_path, stage_cache):
    code, out, err = cli(*DOUBLE, "--cache-dir", str(stage_cache), "--out", str(tmp_path / "a"))
    assert code == 0, err
    assert _origins(tmp_path / "a") == {"aflow": "trained", "dataset1": "trained"}
    entries = list((stage_cache / "stages").iterdir())
    assert len(entries) == 1  # only the stage that another stage builds on
    key = entries[0].name

    code, out, err = cli(*DOUBLE, "--cache-dir", str(stage_cache), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "1 pretraining stage(s) taken from the stage cache" in out
    assert _origins(tmp_path / "b") == {"aflow": "cache", "dataset1": "trained"}
    taken = json.loads((tmp_path / "b" / "run.json").read_text())["stages_from_cache"]
    assert [t["key"] for t in taken] == [key] and "aflow" in taken[0]["label"]
    ckpt = f"checkpoints/{key}.pt"
    assert _sha(tmp_path / "a" / ckpt) == _sha(tmp_path / "b" / ckpt)
    assert _mapes(tmp_path / "a") == _mapes(tmp_path / "b")


def test_a_damaged_cache_entry_is_trained_again(cli, tmp_path, stage_cache):
    assert cli(*DOUBLE, "--cache-dir", str(stage_cache), "--out", str(tmp_path / "a"))[0] == 0
    (entry,) = (stage_cache / "stages").iterdir()
    ckpt = entry / "checkpoint.pt"
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ckpt.write_bytes(bytes(data))

    code, out, err = cli(*DOUBLE, "--cache-dir", str(stage_cache), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "taken from the stage cache" not in out
    assert _origins(tmp_path / "b")["aflow"] == "trained"
    # the retrained stage replaced the damaged entry, and is the same stage as the first run's
    assert _sha(entry / "checkpoint.pt") == _sha(tmp_path / "a" / "checkpoints" / f"{entry.name}.pt")
    assert _mapes(tmp_path / "a") == _mapes(tmp_path / "b")


def test_no_stage_cache_trains_everything(cli, tmp_path, stage_cache):
    assert cli(*DOUBLE, "--cache-dir", str(stage_cache), "--out", str(tmp_path / "a"))[0] == 0
    code, out, err = cli(*DOUBLE, "--cache-dir", str(stage_cache), "--no-stage-cache", "--out",
                         str(tmp_path / "b"))
    assert code == 0, err
    assert set(_origins(tmp_path / "b").values()) == {"trained"}
    assert json.loads((tmp_path / "b" / "run.json").read_text())["stages_from_cache"] == []
