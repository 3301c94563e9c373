"""Uncertainty of Table I (paraisite_bench.stats and the report's "paired" section): each number is checked
against a computation written out here with numpy and scipy.stats, never against the code under test."""

from __future__ import annotations

import math
import random
import re

import numpy as np
import pytest
from paraisite_report.paired import paired_section, paired_tables
from scipy import stats as st

from paraisite_bench.results import ReportData
from paraisite_bench.stats import (
    Interval,
    mean_interval,
    nadeau_bengio,
    paired_comparisons,
    split_means,
    variance_components,
)

#: nine per-split MAPEs of the size Table I holds
NINE = [0.31, 0.45, 0.28, 0.52, 0.39, 0.33, 0.61, 0.27, 0.44]
DIFFS = [-0.04, 0.02, -0.11, 0.05, -0.07, -0.01, -0.09, 0.03, -0.06]


def _nb_expected(d, fraction, level=0.95):
    """The corrected resampled t of Nadeau & Bengio (2003), written out."""
    d = np.asarray(d, dtype=float)
    n = len(d)
    se = math.sqrt((1 / n + fraction / (1 - fraction)) * d.var(ddof=1))
    t = d.mean() / se
    half = st.t.ppf(0.5 + level / 2, n - 1) * se
    return d.mean(), d.mean() - half, d.mean() + half, 2 * st.t.sf(abs(t), n - 1)


def _row(strategy, split, value, seed=0, backbone="megnet", train="dataset1", test="dataset1",
         selection="paper", metric="mape"):
    """A result row as read from results.csv: numbers as strings."""
    return {"backbone": backbone, "strategy": strategy, "train": train, "test": test, "split": str(split),
            "seed": str(seed), "selection": selection, "metric": metric, metric: repr(float(value))}


# ---- intervals --------------------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.95, 0.9])
def test_mean_interval_is_the_student_t_interval(level):
    got = mean_interval([str(v) for v in NINE], level)
    low, high = st.t.interval(level, len(NINE) - 1, loc=np.mean(NINE), scale=st.sem(NINE))
    assert got.n == 9 and got.mean == pytest.approx(np.mean(NINE))
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    if level == 0.95:  # t_{8, 0.975} = 2.306004 from a printed table
        assert got.high - got.mean == pytest.approx(2.306004 * np.std(NINE, ddof=1) / 3, rel=1e-6)


def test_mean_interval_of_one_split_has_no_width():
    one = mean_interval([0.4])
    assert one.mean == 0.4 and one.n == 1 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_interval([0.3, 0.3, 0.3]) == Interval(0.3, 0.3, 0.3, 3)


# ---- Nadeau–Bengio ----------------------------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.2, 0.25])
def test_nadeau_bengio_matches_the_formula(fraction):
    got = nadeau_bengio(DIFFS, test_fraction=fraction)
    mean, low, high, p = _nb_expected(DIFFS, fraction)
    assert got.n == 9
    assert (got.mean, got.low, got.high, got.p) == pytest.approx((mean, low, high, p), rel=1e-12)


def test_nadeau_bengio_is_wider_than_the_naive_paired_t_and_reduces_to_it():
    naive = st.ttest_1samp(DIFFS, 0.0)
    corrected = nadeau_bengio(DIFFS, 0.2)
    assert corrected.p > naive.pvalue
    # with a vanishing test fraction the correction disappears: the ordinary one-sample t-test
    assert nadeau_bengio(DIFFS, 1e-12).p == pytest.approx(naive.pvalue, rel=1e-9)
    assert math.isnan(nadeau_bengio([0.1]).p)
    with pytest.raises(ValueError):
        nadeau_bengio(DIFFS, 1.0)


# ---- rows -------------------------------------------------------------------------------------

def test_split_means_average_seeds_first():
    rows = [_row("scratch", 0, v, seed=s) for s, v in enumerate([0.3, 0.5, 0.7])] + [_row("scratch", 1, 0.2)]
    rows.append({**_row("scratch", 2, 0.0), "mape": ""})  # an empty CSV cell counts nowhere
    means = split_means(rows, "mape")
    assert means == {("megnet", "scratch", "dataset1", "dataset1", "paper"): {0: pytest.approx(0.5), 1: 0.2}}
    assert split_means(rows, "spearman") == {}


def _steps(rng, n=8):
    """pretrained clearly below scratch (same split effect), double indistinguishable from pretrained."""
    rows, values = [], {}
    for s in range(n):
        base = 0.3 + 0.15 * rng.standard_normal()
        values[s] = {"scratch": base + 0.2 + 0.01 * rng.standard_normal(), "pretrained": base,
                     "double": base + 0.05 * rng.standard_normal()}
        rows += [_row(k, s, v) for k, v in values[s].items()]
    return rows, values


def test_paired_comparisons_pair_by_split():
    rng = np.random.default_rng(7)
    rows, values = _steps(rng)
    rows = [r for r in rows if not (r["strategy"] == "pretrained" and r["split"] == "3")]
    random.Random(1).shuffle(rows)
    got = {(c["a"], c["b"]): c for c in paired_comparisons(rows, "mape")}
    assert set(got) == {("pretrained", "scratch"), ("double", "pretrained")}
    common = [s for s in values if s != 3]
    for (a, b), c in got.items():
        d = [values[s][a] - values[s][b] for s in common]
        mean, low, high, p = _nb_expected(d, 0.2)
        assert c["n"] == 7 and (c["backbone"], c["train"], c["test"], c["selection"]) == (
            "megnet", "dataset1", "dataset1", "paper")
        assert (c["diff"], c["ci_low"], c["ci_high"], c["p"]) == pytest.approx((mean, low, high, p))
        assert c["mean_a"] == pytest.approx(np.mean([values[s][a] for s in common]))
    assert got[("pretrained", "scratch")]["verdict"] == "better"  # lower MAPE
    assert got[("double", "pretrained")]["verdict"] == "no evidence"
    # the same numbers as a higher-is-better metric: pretrained is worse
    spear = [{**r, "spearman": r.pop("mape"), "metric": "spearman"} for r in rows]
    flipped = {(c["a"], c["b"]): c["verdict"] for c in paired_comparisons(spear, "spearman")}
    assert flipped[("pretrained", "scratch")] == "worse"


def test_each_strategy_meets_the_best_baseline_on_common_splits():
    rng = np.random.default_rng(3)
    rows, values = _steps(rng, n=5)
    rows += [_row("constant", s, 0.9 + 0.01 * s, backbone="baseline") for s in range(5)]
    rows += [_row("mean", s, 1.4, backbone="baseline") for s in range(4)]
    base = [c for c in paired_comparisons(rows, "mape") if c["b_backbone"] == "baseline"]
    assert {c["a"] for c in base} == {"scratch", "pretrained", "double"}
    assert {c["b"] for c in base} == {"constant"}
    scratch = next(c for c in base if c["a"] == "scratch")
    d = [values[s]["scratch"] - (0.9 + 0.01 * s) for s in range(5)]
    assert scratch["n"] == 5 and scratch["diff"] == pytest.approx(np.mean(d))
    assert scratch["p"] == pytest.approx(_nb_expected(d, 0.2)[3])


def test_variance_components_separate_split_and_seed_spread():
    effects = [0.0, 0.2, -0.1, 0.3, -0.2, 0.1]
    spreads = [0.02, 0.04, 0.06, 0.03, 0.05, 0.01]
    rows = [_row("scratch", s, 0.4 + e + o * c, seed=k)
            for s, (e, c) in enumerate(zip(effects, spreads)) for k, o in enumerate((-1, 0, 1))]
    rows += [_row("pretrained", s, 0.3 + e) for s, e in enumerate(effects)]  # one seed: no components
    rows += [_row("double", 0, 0.3, seed=k) for k in range(2)] + [_row("double", 1, 0.3)]
    (got,) = variance_components(rows, "mape")
    assert (got["strategy"], got["n_splits"], got["seeds"]) == ("scratch", 6, 3)
    # seeds (−c, 0, +c) have sample std c; equal seeds per split: pooled std = root mean square of the c
    seed_std = math.sqrt(np.mean(np.square(spreads)))
    assert got["seed_std"] == pytest.approx(seed_std)
    assert got["split_std"] == pytest.approx(np.std(effects, ddof=1))
    assert got["split_component"] == pytest.approx(math.sqrt(np.var(effects, ddof=1) - seed_std ** 2 / 3))


# ---- the report section -----------------------------------------------------------------------

def _attrs(html: str, tag: str, **match) -> list[dict]:
    """The data-* attributes of every ``tag`` whose attributes include ``match``."""
    out = []
    for m in re.finditer(rf"<{tag}\b([^>]*)>", html):
        attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', m.group(1)))
        if all(attrs.get(k) == v for k, v in match.items()):
            out.append(attrs)
    return out


def test_the_paired_section_renders_comparisons_and_variance():
    rng = np.random.default_rng(11)
    rows, values = _steps(rng, n=6)
    rows += [_row("scratch", s, values[s]["scratch"] + 0.03, seed=1) for s in range(6)]
    runs = [{"protocol": {"test_fraction": 0.25, "selection": "paper"}}]
    html = paired_section(ReportData(runs=runs, rows=rows))
    assert _attrs(html, "table", metric="mape", backbone="megnet", selection="paper")
    (step2,) = _attrs(html, "tr", a="pretrained", b="scratch")
    d = [values[s]["pretrained"] - (values[s]["scratch"] + 0.015) for s in range(6)]
    mean, low, high, p = _nb_expected(d, 0.25)  # the run's test fraction, not the default
    assert int(step2["n"]) == 6 and step2["verdict"] == "better"
    got = [float(step2[k]) for k in ("diff", "ci-low", "ci-high", "p")]
    assert got == pytest.approx([mean, low, high, p])
    (var,) = _attrs(html, "tr", strategy="scratch", seeds="2")
    assert float(var["seed-std"]) == pytest.approx(0.03 / math.sqrt(2))
    assert "Nadeau" in html and "Machine Learning" in html
    # another metric column of the same rows: on the page the headline metric alone, every metric in
    # paired.csv and variance.csv
    more = [dict(r, spearman=str(1 - float(r["mape"]))) for r in rows]
    html = paired_section(ReportData(runs=runs, rows=more))
    assert 'data-metric="spearman"' not in html and 'href="paired.csv"' in html and "spearman" in html
    tables = paired_tables(ReportData(runs=runs, rows=more))
    by_metric = {m: [c for c in tables["paired.csv"] if c["metric"] == m and (c["a"], c["b"]) ==
                     ("pretrained", "scratch")] for m in ("mape", "spearman")}
    (head,), (flipped,) = by_metric["mape"], by_metric["spearman"]
    assert float(head["diff"]) == pytest.approx(mean) and float(head["p"]) == pytest.approx(p)
    # 1 − MAPE: the difference changes sign and, higher being better, the verdict stays "better"
    assert float(flipped["diff"]) == pytest.approx(-mean) and flipped["verdict"] == "better"
    assert {v["metric"] for v in tables["variance.csv"]} == {"mape", "spearman"}


def test_the_paired_section_is_left_out_with_nothing_to_compare():
    assert paired_section(ReportData()) is None
    alone = [_row("scratch", s, 0.3 + 0.01 * s) for s in range(5)]
    assert paired_section(ReportData(runs=[{"protocol": {"test_fraction": 0.2}}], rows=alone)) is None
