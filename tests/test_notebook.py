"""``paraisite_bench.load_results``: a run directory's results as pandas DataFrames, equal to its CSVs."""

from __future__ import annotations

import csv
import math
import os

import pytest
from conftest import SMALL


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir, cache_dir):
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("notebook") / "run"
    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    try:
        main(["run", *SMALL, "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
              "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code
    return out


def _same(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("frame, name", [("results", "results.csv"), ("cells", "table1.csv"),
                                         ("curves", "curves.csv")])
def test_frames_hold_what_the_csvs_hold(run_dir, frame, name):
    import paraisite_bench

    df = getattr(paraisite_bench.load_results(run_dir), frame)
    rows = list(csv.DictReader(open(run_dir / name)))
    assert len(df) == len(rows) > 0
    for col in rows[0]:
        if col in df.columns:
            assert all(_same(x, r[col]) for x, r in zip(df[col], rows) if r[col] != ""), (frame, col)
    assert set(rows[0]) <= set(df.columns)


def test_the_cells_frame_pivots_like_table1(run_dir):
    import paraisite_bench

    cells = paraisite_bench.load_results(run_dir).cells
    pivot = cells.query("selection == 'paper'").pivot_table("mape_mean", ["strategy", "train"], "test")
    results = paraisite_bench.load_results(run_dir).results
    paper = results[(results.selection == "paper") & (results.strategy == "scratch")]
    assert pivot.loc[("scratch", "dataset1"), "dataset1"] == pytest.approx(paper.mape.mean(), abs=1e-6)
    assert set(results.backbone) == {"megnet", "baseline"}


def test_no_run_directory_is_a_clear_error(tmp_path):
    import paraisite_bench
    from paraisite_bench.errors import UserError

    with pytest.raises(UserError, match="not a run directory"):
        paraisite_bench.load_results(tmp_path)
