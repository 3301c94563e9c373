"""The built-in baselines."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from paraisite_bench.baseline import Baseline
from paraisite_bench.data import Record, Target

from .descriptors import Standardiser, magpie, record_key, reduced_formula, structure_descriptors


def relative(target: Target) -> bool:
    """Whether the target is scored by relative error (MAPE: κ): then a baseline works on log κ."""
    return target.kind.metric_name == "mape"


def mape_optimal_constant(values) -> float:
    """The c that minimises the training MAPE Σ|c − y|/y: the median of the y weighted by 1/y (the sum is
    convex and piecewise linear in c, with slope Σ_{y<c} 1/y − Σ_{y>c} 1/y, which changes sign at the first
    sorted y where the cumulative weight reaches half the total). It sits below the plain median, since an
    over-estimate of a small κ costs more relative error than an under-estimate of a large one."""
    y = np.sort(np.asarray(values, dtype=np.float64))
    cum = np.cumsum(1.0 / y)
    return float(y[np.searchsorted(cum, cum[-1] / 2.0)])


class Constant(Baseline):
    name = "constant"
    description = ("one value for every material: for κ (scored by MAPE) the MAPE-optimal constant, the "
                   "1/κ-weighted median of the training κ; for other targets the median (MAE-optimal)")
    needs = "composition"

    def fit(self, records: Sequence[Record], target: Target) -> "Constant":
        y = [r.value for r in records]
        self.value = mape_optimal_constant(y) if relative(target) else float(np.median(y))
        return self

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        return np.full(len(records), self.value)


#: test rows per block of the distance computation (keeps a 4,394-record dataset's differences < 100 MB)
_BLOCK = 16


def nearest(train: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """(n_test, k) indices of the k training rows nearest to each test row (Euclidean; ties to the lower
    index), from the explicit differences (no |a|²+|b|²−2ab rounding)."""
    out = []
    for i in range(0, len(test), _BLOCK):
        d = ((test[i:i + _BLOCK, None, :] - train[None, :, :]) ** 2).sum(axis=2)
        out.append(np.argsort(d, axis=1, kind="stable")[:, :k])
    return np.concatenate(out) if out else np.zeros((0, k), dtype=int)


class KNearest(Baseline):
    name = "knn"
    description = ("mean of the 5 nearest training materials by composition (matminer's 132 Magpie "
                   "features, standardised on the training part); for κ the mean of log10 κ (geometric mean)")
    needs = "composition"
    k = 5

    def fit(self, records: Sequence[Record], target: Target) -> "KNearest":
        X = magpie(records)
        self.scale = Standardiser(X)
        self.X = self.scale(X)
        self.log = relative(target)
        y = np.array([r.value for r in records], dtype=np.float64)
        self.y = np.log10(y) if self.log else y
        return self

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        idx = nearest(self.X, self.scale(magpie(records)), min(self.k, len(self.X)))
        mean = self.y[idx].mean(axis=1)
        return np.power(10.0, mean) if self.log else mean


_MATCHES: dict[tuple, bool] = {}
_MATCHER = []


def same_structure(a: Record, b: Record) -> bool:
    """pymatgen's ``StructureMatcher`` (default tolerances) on two records of the same reduced formula;
    cached per pair of records for the process."""
    key = (record_key(a), record_key(b))
    if key not in _MATCHES:
        if not _MATCHER:
            from pymatgen.analysis.structure_matcher import StructureMatcher

            _MATCHER.append(StructureMatcher())
        _MATCHES[key] = bool(_MATCHER[0].fit(a.structure, b.structure))
    return _MATCHES[key]


class NearestStructure(Baseline):
    name = "nearest-structure"
    description = ("κ of the most similar training structure: the same compound (reduced formula and "
                   "pymatgen StructureMatcher) if there is one, else the nearest by 8 standardised "
                   "structure + composition descriptors (volume and bond length per atom, density, masses, "
                   "electronegativities)")
    needs = "structure"

    def fit(self, records: Sequence[Record], target: Target) -> "NearestStructure":
        self.records = list(records)
        X = structure_descriptors(self.records)
        self.scale = Standardiser(X)
        self.X = self.scale(X)
        self.y = np.array([r.value for r in self.records], dtype=np.float64)
        self.by_formula: dict[str, list[int]] = {}
        for i, rec in enumerate(self.records):
            self.by_formula.setdefault(reduced_formula(rec), []).append(i)
        return self

    def predict(self, records: Sequence[Record]) -> np.ndarray:
        Z = self.scale(structure_descriptors(records))
        out = np.empty(len(records))
        for j, rec in enumerate(records):
            same = [i for i in self.by_formula.get(reduced_formula(rec), [])
                    if same_structure(rec, self.records[i])]
            pool = np.array(same) if same else np.arange(len(self.records))
            d = ((self.X[pool] - Z[j]) ** 2).sum(axis=1)
            out[j] = self.y[pool[int(np.argmin(d))]]
        return out
