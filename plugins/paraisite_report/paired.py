"""The report section on uncertainty: paired comparisons of the strategies on the same splits (Step 2 vs
Step 1, Step 3 vs Step 2, each strategy vs the best baseline) with the Nadeau–Bengio corrected t-test, and
split-to-split against seed-to-seed spread, from :mod:`paraisite_bench.stats`."""

from __future__ import annotations

import math

from paraisite_bench.reference import STRATEGY_STEP
from paraisite_bench.report import fragment
from paraisite_bench.results import METRIC_ORDER, STRATEGY_ORDER, ReportData, rank
from paraisite_bench.stats import BASELINE, lower_is_better, paired_comparisons, variance_components

PACKAGE = "paraisite_report"
DEFAULT_TEST_FRACTION = 0.2


def paired_section(data: ReportData) -> str | None:
    """Paired comparisons and variance components of the headline metric (those of every metric go to
    paired.csv and variance.csv, :func:`paired_tables`), or None when no two strategies share splits and no
    cell has seeds to separate."""
    metrics = _metrics(data.rows)
    view = _metric_view(data, metrics[0]) if metrics else None
    if not view or not (view["groups"] or view["variance"]):
        return None
    return fragment("section_paired.html", package=PACKAGE, v=view, labels=data.labels, others=metrics[1:],
                    fractions=sorted({run_test_fraction(data, r["selection"]) for r in data.rows}))


#: the columns of paired.csv and variance.csv, in order
PAIRED_COLUMNS = ("metric", "backbone", "selection", "train", "test", "a", "b_backbone", "b", "mean_a",
                  "mean_b", "diff", "ci_low", "ci_high", "p", "n", "verdict")
VARIANCE_COLUMNS = ("metric", "backbone", "strategy", "train", "test", "selection", "n_splits", "seeds",
                    "split_std", "seed_std", "split_component")


def paired_tables(data: ReportData) -> dict[str, list[dict]]:
    """paired.csv (every metric's paired comparisons) and, where cells have several seeds, variance.csv."""
    views = [_metric_view(data, m) for m in _metrics(data.rows)]
    paired = [{"metric": v["metric"], **{k: c.get(k) for k in PAIRED_COLUMNS if k != "metric"}}
              for v in views for g in v["groups"] for c in g["rows"]]
    variance = [{"metric": v["metric"], **{k: r.get(k) for k in VARIANCE_COLUMNS if k != "metric"}}
                for v in views for r in v["variance"]]
    tables = {"paired.csv": paired} if paired else {}
    return tables | ({"variance.csv": variance} if variance else {})


def _metrics(rows: list[dict]) -> list[str]:
    """Headline metrics (a row's ``metric``) first, then the other metric columns that hold values."""
    heads = {r["metric"] for r in rows if r.get("metric")}
    present = {m for r in rows for m in METRIC_ORDER if r.get(m) not in (None, "")}
    return sorted(heads | present, key=lambda m: (m not in heads, rank(m, METRIC_ORDER), m))


def run_test_fraction(data: ReportData, selection: str) -> float:
    """The test fraction of the runs of ``selection`` (runs merged into one report share it per
    selection, :func:`paraisite_bench.results.check_protocols`)."""
    protos = [run.get("protocol") or {} for run in data.runs]
    for proto in protos:
        if proto.get("selection", "paper") == selection and "test_fraction" in proto:
            return float(proto["test_fraction"])
    return next((float(p["test_fraction"]) for p in protos if "test_fraction" in p), DEFAULT_TEST_FRACTION)


def _metric_view(data: ReportData, metric: str) -> dict:
    comparisons = []
    for selection in sorted({r["selection"] for r in data.rows}):
        # a baseline has nothing to select: it serves every selection mode's strategies
        rows = [r for r in data.rows if r["selection"] == selection or r["backbone"] == BASELINE]
        comparisons += paired_comparisons(rows, metric, test_fraction=run_test_fraction(data, selection))
    groups: dict[tuple, list[dict]] = {}
    for c in sorted(comparisons, key=_order):
        groups.setdefault((c["backbone"], c["selection"]), []).append(_display(c))
    texts = ("split_std", "seed_std", "split_component")
    variance = [dict(v, **{f"{k}_text": _num(v[k]) for k in texts})
                for v in sorted(variance_components(data.rows, metric), key=_order)]
    return {"metric": metric, "lower_is_better": lower_is_better(metric),
            "groups": [{"backbone": b, "selection": s, "rows": rows} for (b, s), rows in groups.items()],
            "variance": variance}


def _order(c: dict) -> tuple:
    """Comparisons and variance rows in the paper's order: datasets, then steps, baselines last."""
    strategy = c.get("a", c.get("strategy"))
    return (c["backbone"], c["selection"], rank(c["train"]), c["train"], rank(c["test"]), c["test"],
            c.get("b_backbone") == "baseline", rank(strategy, STRATEGY_ORDER), strategy)


def _display(c: dict) -> dict:
    """A comparison with its numbers as text: Δ and interval to 3 decimals, p to 3 (or "< 0.001")."""
    label_a = STRATEGY_STEP.get(c["a"], c["a"])
    label_b = (f"baseline {c['b']}" if c["b_backbone"] == "baseline" else STRATEGY_STEP.get(c["b"], c["b"]))
    p = c["p"]
    return dict(c, label=f"{label_a} ({c['a']}) vs {label_b}" + ("" if c["b_backbone"] == "baseline"
                                                                  else f" ({c['b']})"),
                mean_a_text=_num(c["mean_a"]), mean_b_text=_num(c["mean_b"]),
                diff_text="—" if math.isnan(c["diff"]) else f"{c['diff']:+.3f}",
                ci_text="—" if math.isnan(c["ci_low"]) else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]",
                p_text="—" if math.isnan(p) else ("< 0.001" if p < 0.001 else f"{p:.3f}"))


def _num(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.3f}"

