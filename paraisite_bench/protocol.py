"""The protocol: the options that define a run, and the splits of a dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

SELECTION_MODES = {
    "paper": "epoch selected on the 20 % validation part, MAPE reported on that same part (as the paper)",
    "heldout": "epoch selected on an inner validation part of the training data; MAPE on the untouched 20 %",
    "last": "no selection: the final epoch's weights, trained on the 80 % part like paper",
}

SPLIT_MODES = {
    "random": "a random permutation per dataset (the paper): twins of a formula may fall on both sides",
    "formula": "records with the same reduced formula fall on the same side, in every dataset",
    "chemsys": "records with the same chemical system (set of elements) fall on the same side",
    "prototype": "records with the same prototype (anonymized formula, space group, orbit sizes) "
                 "fall on the same side",
}


def training_regime(selection: str) -> str:
    """How a stage trains for a selection mode: ``paper`` and ``last`` train the same model (the 80 % part,
    the 20 % part watched) and keep both its best and its final weights, so both readings come from one
    stage (its key says ``paper``); ``heldout`` trains on the inner part of the 80 %."""
    return "heldout" if selection == "heldout" else "paper"


#: What a stage on a given dataset may set apart from the protocol's defaults (``--stage-options``), and the
#: type of each value. ``recipe`` names a registered training recipe (none: Adam with the cosine schedule).
STAGE_OPTION_TYPES: dict[str, type] = {"epochs": int, "batch_size": int, "lr": float, "cosine_tmax": int,
                                       "recipe": str}

#: Per-dataset stage options as a Protocol keeps them (hashable): ((dataset, ((option, value), ...)), ...)
StageOptions = tuple[tuple[str, tuple[tuple[str, Any], ...]], ...]


def stage_options_of(mapping: Mapping[str, Mapping[str, Any]]) -> StageOptions:
    """``{dataset: {option: value}}`` in the Protocol's form, sorted so that equal options compare equal."""
    return tuple(sorted((d, tuple(sorted(o.items()))) for d, o in mapping.items() if o))


def merged_stage_options(*layers: StageOptions) -> StageOptions:
    """Per-dataset stage options, later layers overriding earlier ones option by option."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for dataset, options in layer:
            out.setdefault(dataset, {}).update(dict(options))
    return stage_options_of(out)


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
    #: Options of stages on a given dataset (:data:`STAGE_OPTION_TYPES`),
    #: e.g. (("aflow", (("epochs", 20),)),);
    #: others use the protocol's ``epochs``, ``batch_size``, ``lr``, ``cosine_tmax`` and the default recipe.
    stage_options: StageOptions = ()
    #: Stop a stage after this many epochs without a better validation MAPE (0 = off, the paper).
    early_stop: int = 0
    #: Training seeds per split (``seed``, ``seed`` + 1, …): the report separates split from seed variance.
    seeds: int = 1
    #: How records are assigned to the sides of a split (:data:`SPLIT_MODES`; "random" = the paper).
    split_by: str = "random"
    #: Pretraining stages leave out records matching a target dataset's: "off" (the paper), "formula" or
    #: "structure" (see :mod:`paraisite_bench.leakage`); part of those stages' options, so of their keys.
    decontaminate: str = "off"
    #: Backbone -> the dataset of its default pretraining, for backbones without published weights
    #: (``--pretraining crabnet=expt_gap``; see :class:`paraisite_bench.backbone.Pretraining`).
    pretraining: tuple[tuple[str, str], ...] = ()

    def stage_option(self, dataset: str, name: str, defaults: Mapping[str, Any] | None = None) -> Any:
        """Option ``name`` of a stage on ``dataset``: the protocol's per-dataset value, else ``defaults``
        (a backbone's default pretraining), else the protocol's own (None for ``recipe``)."""
        given = dict(dict(self.stage_options).get(dataset, ()))
        if name in given:
            return given[name]
        if defaults and name in defaults:
            return defaults[name]
        return getattr(self, name, None)

    def epochs_for(self, dataset: str) -> int:
        return self.stage_option(dataset, "epochs")

    def subsample_for(self, dataset: str) -> int | None:
        return dict(self.subsample).get(dataset)

    def training_options(self, dataset: str, defaults: Mapping[str, Any] | None = None) -> dict:
        """The options that determine a stage on ``dataset`` (used in its key); ``defaults``: stage options
        a backbone's default pretraining sets, below the protocol's per-dataset ones."""
        def option(name):
            return self.stage_option(dataset, name, defaults)

        recipe = option("recipe")
        return {
            "epochs": option("epochs"), "batch_size": option("batch_size"), "lr": option("lr"),
            "seed": self.seed, "test_fraction": self.test_fraction,
            "selection": training_regime(self.selection),
            "inner_val_fraction": self.inner_val_fraction, "scaler_fit": self.scaler_fit,
            "cosine_tmax": option("cosine_tmax"), "head": list(self.head),
            # the training loop's numerics: a stage trained by a loop that rounds differently (another
            # optimiser kernel, another forward implementation of a backbone) gets another number, so that
            # results of different numerics never share a key; 4 = the current loop
            "trainer": 4,
            "subsample": self.subsample_for(dataset),
            # only when on, so that the default protocol's job keys are unchanged
            **({"early_stop": self.early_stop} if self.early_stop else {}),
            **({"split_by": self.split_by} if self.split_by != "random" else {}),
            **({"recipe": recipe} if recipe else {}),
        }

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["subsample"] = dict(self.subsample)
        d["stage_options"] = {dataset: dict(options) for dataset, options in self.stage_options}
        d["pretraining"] = dict(self.pretraining)
        return d

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> "Protocol":
        """The protocol that :meth:`to_dict` wrote (run.json's ``protocol``); a run.json written before
        per-dataset stage options kept ``stage_epochs`` and ``stage_batch_size`` maps, read as such."""
        known = {f.name for f in dataclasses.fields(Protocol)}
        kw = {k: v for k, v in d.items() if k in known}
        old = {"stage_epochs": "epochs", "stage_batch_size": "batch_size"}
        legacy = [stage_options_of({ds: {option: n} for ds, n in (d.get(field) or {}).items()})
                  for field, option in old.items()]
        kw["stage_options"] = merged_stage_options(
            *legacy, stage_options_of({ds: dict(o) for ds, o in (d.get("stage_options") or {}).items()}))
        for name in ("subsample", "pretraining"):
            kw[name] = tuple(sorted((kw.get(name) or {}).items()))
        if "head" in kw:
            kw["head"] = tuple(kw["head"])
        return Protocol(**kw)


PRESETS: dict[str, dict] = {
    # The paper's protocol (and the original code's scaler and lr schedule).
    "paper": dict(
        protocol=Protocol(),
        backbones=("megnet",), strategies=("scratch", "pretrained", "double"),
        train=("dataset1", "dataset2", "mix", "aflow"), test=("dataset1", "dataset2", "mix", "aflow"),
    ),
    # The honest protocol: splits grouped by reduced formula (polymorph twins on one side), pretraining stages
    # without any record whose structure is in a target dataset, the epoch selected on an inner part of the
    # training data, the label scaler fitted on training labels only. Same grid as the paper.
    "strict": dict(
        protocol=Protocol(split_by="formula", decontaminate="structure", selection="heldout",
                          scaler_fit="train"),
        backbones=("megnet",), strategies=("scratch", "pretrained", "double"),
        train=("dataset1", "dataset2", "mix", "aflow"), test=("dataset1", "dataset2", "mix", "aflow"),
    ),
    # A small real run: 2 splits, 15 epochs, AFLOW subsampled to 400 structures and CrabNet's default
    # pretraining (matbench_mp_e_form, 132,752 compositions) to 4,000 compositions. Minutes on 2 cores.
    "quick": dict(
        protocol=Protocol(splits=2, epochs=15, subsample=(("aflow", 400), ("mp_e_form", 4000))),
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
    """What decides split r of a dataset besides its ids: the seed, the two fractions and the grouping
    (:data:`SPLIT_MODES`)."""

    seed: int
    test_fraction: float
    inner_val_fraction: float
    split_by: str = "random"

    @staticmethod
    def of(options: Mapping) -> "SplitOptions":
        """The split options of a stage's options: ``split_seed`` when they carry one (a stage whose
        training seed is varied apart from its splits, see :func:`with_training_seed`), else ``seed``."""
        return SplitOptions(options.get("split_seed", options["seed"]), options["test_fraction"],
                            options["inner_val_fraction"], options.get("split_by", "random"))


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


def _unit(seed: int, r: int, part: str, key: str) -> float:
    """A number in [0, 1) that depends only on (seed, r, part, group key): sha256, not Python's hash, so
    that it is the same in every process."""
    digest = hashlib.sha256(f"{seed}\x1f{r}\x1f{part}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def make_grouped_split(keys: Mapping[str, str], r: int, seed: int, test_fraction: float,
                       inner_val_fraction: float) -> Split:
    """Split r of records grouped by key (id -> key): a record is in the test part when
    u(seed, r, key) < test_fraction, in the inner validation part when a second u < inner_val_fraction.
    The side depends on the key only, never on the dataset, so every dataset that holds records of a
    group (a subset, a union, a user file) puts them on the same side; the fractions vary around the
    nominal ones with the number and sizes of groups."""
    ids = sorted(keys)
    test = tuple(i for i in ids if _unit(seed, r, "test", keys[i]) < test_fraction)
    held = set(test)
    train = tuple(i for i in ids if i not in held)
    inner_val = tuple(i for i in train if _unit(seed, r, "inner", keys[i]) < inner_val_fraction)
    val = set(inner_val)
    return Split(train, test, tuple(i for i in train if i not in val), inner_val)


def subsample_ids(dataset: str, ids, n: int, seed: int) -> list[str]:
    ids = sorted(ids)
    if n >= len(ids):
        return ids
    rng = np.random.default_rng([seed, zlib.crc32(b"subsample:" + dataset.encode())])
    return sorted(ids[i] for i in rng.choice(len(ids), size=n, replace=False))
