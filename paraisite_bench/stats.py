"""Uncertainty of the numbers in Table I: intervals of a mean over splits, paired comparisons of two
strategies on the same splits, and split-to-split versus seed-to-seed variance.

A Table I cell is one backbone × strategy × train × test × selection; its result rows (see
:mod:`paraisite_bench.results`) hold one value per split and seed of each metric column. Every function here
first averages seeds within a split (:func:`split_means`), so a cell run with K seeds counts one value per
split: splits, not seeds, are the independent-ish replicates of the protocol.

Distributions come from :mod:`scipy.stats`; nothing here imports a model library.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .targets import HIGHER_IS_BETTER

#: The keys of a cell (a Table I entry)
CELL_KEYS = ("backbone", "strategy", "train", "test", "selection")
#: The backbone name of baseline rows (constant predictor and the like)
BASELINE = "baseline"
#: Step 2 vs Step 1, Step 3 vs Step 2
STEP_PAIRS = (("pretrained", "scratch"), ("double", "pretrained"))
ALPHA = 0.05


def lower_is_better(metric: str) -> bool:
    """Errors (MAPE, MAE) are better smaller; correlations and R² (:data:`HIGHER_IS_BETTER`) larger."""
    return metric not in HIGHER_IS_BETTER


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values and its two-sided confidence interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int


@dataclass(frozen=True)
class PairedTest:
    """Mean paired difference of ``n`` splits, its confidence interval and two-sided p-value."""

    mean: float
    low: float
    high: float
    p: float
    n: int


def mean_interval(values, level: float = 0.95) -> Interval:
    """Student t interval of the mean of ``values`` (one per split): mean ± t_{n−1} · s/√n, s the sample
    std (ddof=1), from :func:`scipy.stats.t.interval`.

    Why t and not a bootstrap: a cell has 9 splits (the paper's protocol); a percentile bootstrap of 9
    values covers too rarely (it cannot reach beyond the observed extremes and ignores the n−1 dof), while
    the t interval is exact for normal values and robust enough at this size. n == 1 → low = high = nan
    (no spread to estimate); n == 0 → everything nan. Identical values → low = high = mean.
    """
    x = np.asarray([float(v) for v in values], dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return Interval(mean, mean, mean, n)
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high), n)


def nadeau_bengio(diffs, test_fraction: float = 0.2, level: float = 0.95) -> PairedTest:
    """Corrected resampled t-test of paired differences over random train/test splits.

    With d_j the difference of two models on split j (j = 1..n), d̄ their mean and s² their sample
    variance (ddof=1), the splits share most of their training data, so the naive variance s²/n is too
    small. Nadeau & Bengio (2003), "Inference for the Generalization Error", Machine Learning 52:239–281,
    eq. for the corrected resampled t; used as in Bouckaert & Frank (2004), PAKDD, LNCS 3056:3–12:

        t = d̄ / sqrt((1/n + n_test/n_train) · s²),   n_test/n_train = test_fraction / (1 − test_fraction)

    with n − 1 degrees of freedom. p is two-sided (``2 · scipy.stats.t.sf(|t|, n−1)``) and the interval is
    d̄ ± t_{n−1} · sqrt((1/n + n_test/n_train) · s²). n < 2 → low, high and p nan. All differences equal
    (s = 0): the interval collapses to d̄ and p is 1 when d̄ == 0, else 0.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    d = np.asarray([float(v) for v in diffs], dtype=float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return PairedTest(mean, math.nan, math.nan, math.nan, n)
    ratio = test_fraction / (1.0 - test_fraction)
    se = math.sqrt((1.0 / n + ratio) * float(d.var(ddof=1)))
    if se == 0.0:
        return PairedTest(mean, mean, mean, 1.0 if mean == 0.0 else 0.0, n)
    p = 2.0 * float(stats.t.sf(abs(mean) / se, n - 1))
    low, high = stats.t.interval(level, n - 1, loc=mean, scale=se)
    return PairedTest(mean, float(low), float(high), p, n)


def _value(row: dict, metric: str) -> float | None:
    """The row's value of ``metric`` as a float, or None where the row has no such column or it is empty."""
    v = row.get(metric)
    if v is None or v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _per_split(rows, metric: str) -> dict[tuple, dict[int, list[float]]]:
    """Per cell and split: the values of ``metric`` of its seeds (rows without a value left out)."""
    acc: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        v = _value(r, metric)
        if v is not None:
            acc[tuple(r[k] for k in CELL_KEYS)][int(r["split"])].append(v)
    return acc


def split_means(rows, metric: str) -> dict[tuple, dict[int, float]]:
    """Per cell (:data:`CELL_KEYS` tuple) and split: the mean of ``metric`` over the split's seeds.

    Rows without a value of ``metric`` (another target's metric, an empty CSV cell) are left out; a row
    without a ``seed`` key counts as one seed. Values and splits may be strings (rows read from CSV).
    """
    acc = _per_split(rows, metric)
    return {cell: {s: float(np.mean(v)) for s, v in sorted(per.items())} for cell, per in acc.items()}


def verdict(metric: str, test: PairedTest, alpha: float = ALPHA) -> str:
    """"better" / "worse" (the first of the pair against the second, at level ``alpha``) or "no evidence"."""
    if not test.p < alpha:  # nan p (n < 2) is no evidence either
        return "no evidence"
    lower = lower_is_better(metric)
    return "better" if (test.mean < 0) == lower else "worse"


def compare(a: dict[int, float], b: dict[int, float], metric: str, test_fraction: float) -> dict:
    """Paired comparison of two cells' per-split values (a − b) on the splits both have."""
    common = sorted(set(a) & set(b))
    test = nadeau_bengio([a[s] - b[s] for s in common], test_fraction)
    return {"metric": metric, "mean_a": float(np.mean([a[s] for s in common])) if common else math.nan,
            "mean_b": float(np.mean([b[s] for s in common])) if common else math.nan,
            "diff": test.mean, "ci_low": test.low, "ci_high": test.high, "p": test.p, "n": test.n,
            "verdict": verdict(metric, test)}


def paired_comparisons(rows, metric: str, pairs=STEP_PAIRS, test_fraction: float = 0.2) -> list[dict]:
    """Paired comparisons of strategies on the same splits, for each backbone × train × test × selection.

    For each pair (a, b) whose two cells both exist: ``diff`` = mean over common splits of a − b (seeds
    averaged first), its Nadeau–Bengio interval and p (:func:`nadeau_bengio`), ``n`` common splits and a
    ``verdict`` for a against b ("better"/"worse"/"no evidence" at α = 0.05; lower is better for
    :func:`lower_is_better`). Where baseline rows (backbone "baseline") exist for the same train × test,
    each strategy is also compared against the baseline with the lowest (or, for a higher-is-better
    metric, highest) mean, with ``b_backbone`` "baseline". Keys of each dict: backbone, train, test,
    selection, a, b, b_backbone, metric, mean_a, mean_b, diff, ci_low, ci_high, p, n, verdict.
    """
    means = split_means(rows, metric)
    out = []
    for (backbone, strategy, train, test, selection), a_vals in means.items():
        if backbone == BASELINE:
            continue
        head = {"backbone": backbone, "train": train, "test": test, "selection": selection}
        for a, b in pairs:
            b_vals = means.get((backbone, b, train, test, selection))
            if strategy == a and b_vals is not None:
                out.append({**head, "a": a, "b": b, "b_backbone": backbone,
                            **compare(a_vals, b_vals, metric, test_fraction)})
        best = _best_baseline(means, train, test, metric)
        if best is not None:
            out.append({**head, "a": strategy, "b": best[0], "b_backbone": BASELINE,
                        **compare(a_vals, best[1], metric, test_fraction)})
    return out


def _best_baseline(means: dict, train: str, test: str, metric: str) -> tuple[str, dict] | None:
    """(strategy, per-split values) of the baseline of ``train`` × ``test`` with the best mean, or None."""
    found = [(k[1], v) for k, v in means.items() if k[0] == BASELINE and (k[2], k[3]) == (train, test)]
    if not found:
        return None
    sign = 1.0 if lower_is_better(metric) else -1.0
    return min(found, key=lambda kv: sign * float(np.mean(list(kv[1].values()))))


def variance_components(rows, metric: str) -> list[dict]:
    """Split-to-split against seed-to-seed spread, per cell with ≥ 2 seeds on each of ≥ 2 splits.

    Estimators (one-way random-effects layout, splits as groups, seeds within a split as replicates):

    - ``seed_std``: pooled within-split std, sqrt(Σ_i (k_i − 1) s_i² / Σ_i (k_i − 1)), s_i the sample std
      (ddof=1) of split i's k_i seeds, over the splits with k_i ≥ 2;
    - ``split_std``: sample std (ddof=1) of the means of those splits (seeds averaged first), the spread a
      Table I std shows when it is computed from split means;
    - ``split_component``: the split-to-split std with the seed noise the split means still carry taken out,
      sqrt(max(0, split_std² − seed_std² / k̃)), k̃ the harmonic mean of k_i (method of moments).

    Keys: the :data:`CELL_KEYS`, metric, n_splits (splits with ≥ 2 seeds), seeds (fewest seeds on such a
    split), split_std, seed_std, split_component.
    """
    acc = _per_split(rows, metric)
    out = []
    for cell, per in acc.items():
        seeded = [np.asarray(v) for v in per.values() if len(v) >= 2]
        if len(seeded) < 2:
            continue
        dof = sum(len(v) - 1 for v in seeded)
        seed_var = sum((len(v) - 1) * float(v.var(ddof=1)) for v in seeded) / dof
        split_var = float(np.var([np.mean(v) for v in seeded], ddof=1))
        k_tilde = float(stats.hmean([len(v) for v in seeded]))
        out.append({**dict(zip(CELL_KEYS, cell)), "metric": metric, "n_splits": len(seeded),
                    "seeds": min(len(v) for v in seeded), "split_std": math.sqrt(split_var),
                    "seed_std": math.sqrt(seed_var),
                    "split_component": math.sqrt(max(0.0, split_var - seed_var / k_tilde))})
    return out
