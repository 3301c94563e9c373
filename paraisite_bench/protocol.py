"""The protocol: the options that define a run, and the splits of a dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Mapping

import numpy as np

SELECTION_MODES = {
    "paper": "epoch selected on the 20 % validation part, MAPE reported on that same part (as the paper)",
    "heldout": "epoch selected on an inner validation part of the training data; MAPE on the untouched 20 %",
    "last": "no selection: the final epoch's weights, trained on the 80 % part like paper",
}


def training_regime(selection: str) -> str:
    """How a stage trains for a selection mode: ``paper`` and ``last`` train the same model (the 80 % part,
    the 20 % part watched) and keep both its best and its final weights, so both readings come from one
    stage (its key says ``paper``); ``heldout`` trains on the inner part of the 80 %."""
    return "heldout" if selection == "heldout" else "paper"


def readings(regime: str) -> tuple[str, ...]:
    """The selection modes a stage trained under ``regime`` is evaluated under."""
    return ("heldout",) if regime == "heldout" else ("paper", "last")


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
    #: Training seeds per split (``seed``, ``seed`` + 1, …): the report separates split from seed variance.
    seeds: int = 1

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
            "seed": self.seed, "test_fraction": self.test_fraction,
            "selection": training_regime(self.selection),
            "inner_val_fraction": self.inner_val_fraction, "scaler_fit": self.scaler_fit,
            "cosine_tmax": self.cosine_tmax, "head": list(self.head),
            # the training loop's numerics: a stage trained by a loop that rounds differently (another
            # optimiser kernel, another forward implementation of a backbone) gets another number, so that
            # results of different numerics never share a key; 4 = the current loop
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


@dataclass(frozen=True)
class SplitOptions:
    """What decides split r of a dataset besides its ids: the seed and the two fractions."""

    seed: int
    test_fraction: float
    inner_val_fraction: float

    @staticmethod
    def of(options: Mapping) -> "SplitOptions":
        """The split options of a stage's options: ``split_seed`` when they carry one (a stage whose
        training seed is varied apart from its splits, see :func:`with_training_seed`), else ``seed``."""
        return SplitOptions(options.get("split_seed", options["seed"]), options["test_fraction"],
                            options["inner_val_fraction"])


def with_training_seed(options: Mapping, seed: int) -> dict:
    """A stage's options trained with another ``seed`` on the same splits: the splits' seed is kept as
    ``split_seed`` (part of the stage's key, like every option)."""
    return dict(options, seed=seed, split_seed=SplitOptions.of(options).seed)


def make_split(dataset: str, ids, r: int, seed: int, test_fraction: float,
               inner_val_fraction: float) -> Split:
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
