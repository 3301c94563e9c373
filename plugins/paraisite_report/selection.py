"""The report section on what a cell's number depends on besides the model: the epoch-selection mode (the
paper's selection on the very split it reports against the last epoch, paired by split) and the metric
(every metric of every cell, with its 95 % interval)."""

from __future__ import annotations

import math

from paraisite_bench.report import fragment
from paraisite_bench.results import BASELINE, STRATEGY_ORDER, ReportData, metric_of, metrics_in, rank
from paraisite_bench.stats import CELL_KEYS, compare, split_means

from .paired import run_test_fraction

PACKAGE = "paraisite_report"


def selection_section(data: ReportData) -> str | None:
    """Selection optimism (paper − last, per cell) and the table of every metric, or None without rows."""
    if not data.rows:
        return None
    return fragment("section_selection.html", package=PACKAGE, optimism=optimism(data),
                    metrics=metrics_in(data.rows), cells=_metric_rows(data), labels=data.labels)


def optimism(data: ReportData) -> list[dict]:
    """Per cell read under both ``paper`` and ``last``: the paper reading minus the last-epoch one, paired by
    split (Nadeau–Bengio interval and p): how much choosing the epoch on the reported split flatters it."""
    out = []
    rows = [r for r in data.rows if r["backbone"] != BASELINE]
    for metric in {metric_of(r) for r in rows}:
        per = split_means(rows, metric)
        fraction = run_test_fraction(data, "paper")
        for cell, paper in per.items():
            if cell[-1] != "paper":
                continue
            last = per.get(cell[:-1] + ("last",))
            if last:
                keys = dict(zip(CELL_KEYS[:-1], cell[:-1]))
                out.append({**keys, **compare(paper, last, metric, fraction)})
    return sorted(out, key=lambda c: (c["backbone"], rank(c["train"]), c["train"], rank(c["test"]),
                                      c["test"], rank(c["strategy"], STRATEGY_ORDER)))



def _metric_rows(data: ReportData) -> list[dict]:
    """Table I rows with each metric's mean and interval as text, trained models first, baselines last."""
    def text(row: dict, m: str) -> str:
        mean, low, high = (row.get(f"{m}_{s}") for s in ("mean", "ci_low", "ci_high"))
        if mean in (None, ""):
            return "—"
        if low in (None, "") or math.isnan(float(low)):
            return f"{float(mean):.3f}"
        return f"{float(mean):.3f} [{float(low):.3f}, {float(high):.3f}]"
    metrics = metrics_in(data.rows)
    rows = sorted(data.table, key=lambda r: (r["backbone"] == BASELINE, r["backbone"], r["selection"],
                                             rank(r["train"]), r["train"], rank(r["test"]), r["test"],
                                             rank(r["strategy"], STRATEGY_ORDER), r["strategy"]))
    return [dict(r, texts={m: text(r, m) for m in metrics}) for r in rows]
