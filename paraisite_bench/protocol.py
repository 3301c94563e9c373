"""The protocol: target transform, splits, metrics and the options that define a run."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass

import numpy as np
import torch

SELECTION_MODES = {
    "paper": "epoch selected on the 20 % validation part, MAPE reported on that same part (as the paper)",
    "heldout": "epoch selected on an inner validation part of the training data; MAPE on the untouched 20 %",
}


@dataclass(frozen=True)
class Protocol:
    """Every option that changes what a training stage computes (part of each job's key)."""

    splits: int = 9
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 42
    test_fraction: float = 0.2
    #: "paper" (select on the 20 % part) or "heldout" (select on an inner part of the 80 %).
    selection: str = "paper"
    inner_val_fraction: float = 0.2
    #: Fit the label scaler on "all" records of the dataset (the original code) or "train" only.
    scaler_fit: str = "all"
    #: Cosine annealing T_max in epochs, stepped once per epoch (original code: 1000); 0 = constant lr.
    cosine_tmax: int = 1000
    head: tuple[int, ...] = (350, 350, 350)
    #: Per-dataset cap on records (deterministic subsample), e.g. {"aflow": 400}.
    subsample: tuple[tuple[str, int], ...] = ()
    #: Epochs for stages on a given dataset (e.g. (("aflow", 20),)); others use ``epochs``.
    stage_epochs: tuple[tuple[str, int], ...] = ()
    #: Stop a stage after this many epochs without a better validation MAPE (0 = off, the paper).
    early_stop: int = 0
    #: Batch size for stages on a given dataset (e.g. (("expt_gap", 256),)); others use ``batch_size``.
    stage_batch_size: tuple[tuple[str, int], ...] = ()

    def epochs_for(self, dataset: str) -> int:
        return dict(self.stage_epochs).get(dataset, self.epochs)

    def batch_size_for(self, dataset: str) -> int:
        return dict(self.stage_batch_size).get(dataset, self.batch_size)

    def subsample_for(self, dataset: str) -> int | None:
        return dict(self.subsample).get(dataset)

    def training_options(self, dataset: str) -> dict:
        """The options that determine a stage on ``dataset`` (used in its key)."""
        return {
            "epochs": self.epochs_for(dataset), "batch_size": self.batch_size_for(dataset), "lr": self.lr,
            "seed": self.seed, "test_fraction": self.test_fraction, "selection": self.selection,
            "inner_val_fraction": self.inner_val_fraction, "scaler_fit": self.scaler_fit,
            "cosine_tmax": self.cosine_tmax, "head": list(self.head),
            # version of the training loop's semantics (2: straight-through clamp of the κ prediction;
            # 3: the fast loop's fused Adam, whose last-bit differences fine-tuning from published weights
            # amplifies into different per-split results after a few epochs: results of the loops never mix;
            # 4: backbones' fast paths (MEGNet's re-implemented forward, compiled for long stages) round
            # differently from 3's matgl modules: same function, results of the two never mix)
            "trainer": 4,
            "subsample": self.subsample_for(dataset),
            # only when on, so that the default protocol's job keys are unchanged
            **({"early_stop": self.early_stop} if self.early_stop else {}),
        }

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["subsample"] = dict(self.subsample)
        d["stage_epochs"] = dict(self.stage_epochs)
        d["stage_batch_size"] = dict(self.stage_batch_size)
        return d


PRESETS: dict[str, dict] = {
    # The paper's protocol (and the original code's scaler and lr schedule).
    "paper": dict(
        protocol=Protocol(),
        backbones=("megnet",), strategies=("scratch", "pretrained", "double"),
        train=("dataset1", "dataset2", "mix", "aflow"), test=("dataset1", "dataset2", "mix", "aflow"),
    ),
    # A small real run: 2 splits, 15 epochs, AFLOW subsampled to 400 structures. Minutes on 2 cores.
    "quick": dict(
        protocol=Protocol(splits=2, epochs=15, subsample=(("aflow", 400),)),
        backbones=("megnet",), strategies=("scratch", "pretrained", "double"),
        train=("dataset1", "dataset2", "mix", "aflow"), test=("dataset1", "dataset2", "mix", "aflow"),
    ),
}


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ---- target transform -------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetTransform:
    """y = (log10(κ + 1) − mean) / std, and back."""

    mean: float
    std: float

    @staticmethod
    def fit(kappa) -> "TargetTransform":
        logk = np.log10(np.asarray(kappa, dtype=np.float64) + 1.0)
        std = float(logk.std())
        return TargetTransform(float(logk.mean()), std if std > 0 else 1.0)

    def forward(self, kappa):
        if isinstance(kappa, torch.Tensor):
            return (torch.log10(kappa + 1.0) - self.mean) / self.std
        return (np.log10(np.asarray(kappa, dtype=np.float64) + 1.0) - self.mean) / self.std

    #: Predicted log10(κ+1) is kept in [0, 8]: κ ≥ 0 (physical) and no float32 overflow.
    LOG_RANGE = (0.0, 8.0)

    def inverse(self, y):
        """κ from a (standardised) prediction. On tensors the clamp to LOG_RANGE is straight-through:
        the value is clamped but the gradient is not cut, so a model that undershoots (κ → −1, where
        10^z has no slope) or overshoots is pulled back instead of being stuck."""
        lo, hi = self.LOG_RANGE
        if isinstance(y, torch.Tensor):
            z = y * self.std + self.mean
            z = z + (z.clamp(lo, hi) - z).detach()
            return torch.pow(10.0, z) - 1.0
        z = np.clip(np.asarray(y, dtype=np.float64) * self.std + self.mean, lo, hi)
        return np.power(10.0, z) - 1.0


@dataclass(frozen=True)
class StandardTransform:
    """y = (v − mean) / std, and back: the transform of a non-κ target (e.g. a band gap in eV)."""

    mean: float
    std: float

    @staticmethod
    def fit(values) -> "StandardTransform":
        v = np.asarray(values, dtype=np.float64)
        std = float(v.std())
        return StandardTransform(float(v.mean()), std if std > 0 else 1.0)

    def forward(self, v):
        if isinstance(v, torch.Tensor):
            return (v - self.mean) / self.std
        return (np.asarray(v, dtype=np.float64) - self.mean) / self.std

    def inverse(self, y):
        if isinstance(y, torch.Tensor):
            return y * self.std + self.mean
        return np.asarray(y, dtype=np.float64) * self.std + self.mean


def fit_transform(target, values):
    """The transform a dataset's :class:`~paraisite_bench.data.Target` asks for, fitted on ``values``."""
    if target.transform == "log10p1":
        return TargetTransform.fit(values)
    if target.transform == "standardise":
        return StandardTransform.fit(values)
    raise ValueError(f"unknown target transform {target.transform!r}")


def make_transform(kind: str, mean: float, std: float):
    """Rebuild a fitted transform from a checkpoint's (kind, mean, std)."""
    return TargetTransform(mean, std) if kind == "log10p1" else StandardTransform(mean, std)


def mae(pred, true) -> float:
    """Mean absolute error in the target's units."""
    return float(np.mean(np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(true, dtype=np.float64))))


def metric_for(target):
    """The metric function of a target: MAPE for κ, MAE otherwise."""
    return mape if target.metric == "mape" else mae


def mape(pred, true) -> float:
    """Mean absolute percentage error as a fraction (0.34 = 34 %), as in the paper's Table I."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    return float(np.mean(np.abs(pred - true) / np.abs(true)))


# ---- splits -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """Ids of one split r of one dataset: the 80 % training part (with its inner train/validation
    parts for the held-out selection mode) and the 20 % test part."""

    train: tuple[str, ...]
    test: tuple[str, ...]
    inner_train: tuple[str, ...]
    inner_val: tuple[str, ...]

    def __or__(self, other: "Split") -> "Split":
        return Split(self.train + other.train, self.test + other.test,
                     self.inner_train + other.inner_train, self.inner_val + other.inner_val)


def make_split(dataset: str, ids, r: int, seed: int, test_fraction: float, inner_val_fraction: float) -> Split:
    """Split r of a dataset: depends only on (dataset name, ids, r, seed), so it is identical for
    every backbone and strategy (paired comparisons) and reproducible."""
    ids = sorted(ids)
    rng = np.random.default_rng([seed, r, zlib.crc32(dataset.encode())])
    perm = rng.permutation(len(ids))
    n_test = max(1, int(round(test_fraction * len(ids))))
    test = tuple(ids[i] for i in sorted(perm[:n_test]))
    train_idx = perm[n_test:]
    n_inner = max(1, int(round(inner_val_fraction * len(train_idx))))
    inner_val = tuple(ids[i] for i in sorted(train_idx[:n_inner]))
    inner_train = tuple(ids[i] for i in sorted(train_idx[n_inner:]))
    train = tuple(ids[i] for i in sorted(train_idx))
    return Split(train, test, inner_train, inner_val)


def subsample_ids(dataset: str, ids, n: int, seed: int) -> list[str]:
    ids = sorted(ids)
    if n >= len(ids):
        return ids
    rng = np.random.default_rng([seed, zlib.crc32(b"subsample:" + dataset.encode())])
    return sorted(ids[i] for i in rng.choice(len(ids), size=n, replace=False))
