"""Shared fixtures: the real data root (../shared/data unless PARAISITE_BENCH_DATA says otherwise),
a per-session feature cache, and a helper that runs the CLI in this process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # test plugin modules (tests/plugins_for_tests.py)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("PARAISITE_BENCH_DATA", REPO.parent / "shared" / "data")).resolve()
    if not (path / "ltc" / "dataset1.json.gz").exists():
        pytest.fail(f"test data root {path} lacks ltc/dataset1.json.gz: set PARAISITE_BENCH_DATA")
    return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature-cache")


@pytest.fixture(autouse=True)
def _env(monkeypatch, data_dir, cache_dir):
    monkeypatch.setenv("PARAISITE_BENCH_DATA", str(data_dir))
    monkeypatch.setenv("PARAISITE_BENCH_CACHE", str(cache_dir))


@pytest.fixture
def cli(capsys):
    """Run ``paraisite-bench ARGS`` in-process; return (exit code, stdout, stderr)."""
    from paraisite_bench.cli import main

    def run(*args: str):
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


#: A small real grid: Dataset1 and a 60-structure AFLOW subsample, 2 splits, 2 epochs.
SMALL = ["--preset", "quick", "--splits", "2", "--epochs", "2", "--subsample", "aflow=60", "--no-progress"]


def model_rows(path, selection: str = "paper") -> list[dict]:
    """The trained models' rows of a results.csv read under one selection mode (a paper-regime stage is read
    at its selected and at its last epoch; baselines have rows of their own)."""
    import csv

    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["backbone"] != "baseline" and r["selection"] == selection]
