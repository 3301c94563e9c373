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
    """Paired comparisons and variance components for each metric the rows carry (headline metric first,
    the others folded), or None when no two strategies share splits and no cell has seeds to separate."""
    views = [v for m in _metrics(data.rows) if (v := _metric_view(data, m))["groups"] or v["variance"]]
    if not views:
        return None
    return fragment("section_paired.html", package=PACKAGE, views=views, labels=data.labels,
                    fractions=sorted({run_test_fraction(data, r["selection"]) for r in data.rows}))


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

