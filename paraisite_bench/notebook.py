"""Results as pandas DataFrames, for notebooks: ``paraisite_bench.load_results(run_dir)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Results:
    """One or several run directories' results as DataFrames.

    ``results``: one row per (backbone, strategy, train, test, split, seed, selection) with every metric
    (``mape``, ``mae_log``, ``spearman``, ``r2_log`` for κ) and the leakage counts, baselines included
    (``backbone == "baseline"``); ``cells``: Table I, one row per cell × selection with each metric's
    ``_mean``, ``_std``, ``_ci_low``, ``_ci_high``; ``curves``: the learning curves (a row per stage × epoch).
    """

    results: object
    cells: object
    curves: object


def load_results(*run_dirs: str | Path) -> Results:
    """Load run directories (their store, or their CSVs when the store is gone) the way ``paraisite-bench
    report`` does, merged into one set of DataFrames::

        import paraisite_bench
        r = paraisite_bench.load_results("runs/quick")
        r.cells.query("selection == 'paper'").pivot_table("mape_mean", ["strategy", "train"], "test")
    """
    import pandas as pd  # pandas only for this entry point

    from .parts import load_report_data

    if not run_dirs:
        raise TypeError("load_results() needs at least one run directory")
    data = load_report_data(run_dirs)  # the parts of one run (run --only-splits) joined
    return Results(pd.DataFrame(data.rows), pd.DataFrame(data.table), pd.DataFrame(data.curves))
