"""Loaded datasets, cached features and splits for one run (shared by every job of the run)."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from .data import LoadContext, Record, records_fingerprint, validate_records
from .errors import PluginFailure, RecordError, UserError
from .plugins import Registry
from .protocol import (
    SPLIT_MODES,
    Protocol,
    Split,
    SplitOptions,
    make_grouped_split,
    make_split,
    stable_hash,
    subsample_ids,
)
from .userdata import PROVIDER as USER_PROVIDER


@dataclass
class LoadedDataset:
    name: str
    records: dict[str, Record]
    fingerprint: str
    skipped: list[RecordError] = field(default_factory=list)


def default_cache_dir() -> Path:
    return Path(os.environ.get("PARAISITE_BENCH_CACHE", Path.home() / ".cache" / "paraisite-bench"))


class Context:
    """Datasets (validated, subsampled), features per (backbone, dataset) and splits.

    The protocol decides each dataset's subsample (part of the dataset's identity and fingerprint);
    splits are decided by the options a caller passes (a stage's own options)."""

    def __init__(self, registry: Registry, data_dir: Path, protocol: Protocol, cache_dir: Path | None = None):
        self.registry = registry
        self.data_dir = Path(data_dir)
        self.protocol = protocol
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self._datasets: dict[str, LoadedDataset] = {}
        self._features: dict[tuple[str, str], dict] = {}
        #: (backbone, dataset) whose featuriser failed in this process: kept in memory only (never cached on
        #: disk), so that a union dataset does not run a broken featuriser again on the same component
        self._plugin_failures: dict[tuple[str, str], PluginFailure] = {}
        self._backbones: dict[str, object] = {}
        #: values derived from the datasets for this run (splits, overlap keys, structure matches)
        self.derived: dict = {}
        self.skipped: list[RecordError] = []

    # ---- datasets ----------------------------------------------------------------------------
    def atomic_names(self, name: str) -> list[str]:
        spec = self.registry.dataset(name)
        if not spec.components:
            return [spec.name]
        return [a for c in spec.components for a in self.atomic_names(c)]

    def dataset(self, name: str) -> LoadedDataset:
        spec = self.registry.dataset(name)
        if spec.name in self._datasets:
            return self._datasets[spec.name]
        if spec.components:
            parts = [self.dataset(c) for c in spec.components]
            records = {k: v for p in parts for k, v in p.records.items()}
            loaded = LoadedDataset(spec.name, records, stable_hash([p.fingerprint for p in parts]))
        else:
            try:
                raw = spec.loader(LoadContext(self.data_dir))
            except UserError:
                raise
            except Exception as exc:
                raise UserError(f"dataset {spec.name!r} (plugin {spec.plugin}) failed to load: "
                                f"{type(exc).__name__}: {exc}") from None
            good, bad = validate_records(spec.name, raw, spec.target)
            n = self.protocol.subsample_for(spec.name)
            if n is not None:
                keep = set(subsample_ids(spec.name, [r.id for r in good], n, self.protocol.seed))
                good = [r for r in good if r.id in keep]
            if not good:
                raise UserError(f"dataset {spec.name!r} has no valid records ({len(bad)} rejected): "
                                "check its file")
            loaded = LoadedDataset(spec.name, {r.id: r for r in good}, records_fingerprint(good), bad)
            self.skipped.extend(bad)
        self._datasets[spec.name] = loaded
        return loaded

    # ---- splits ------------------------------------------------------------------------------
    def split(self, name: str, r: int, options: SplitOptions | Mapping) -> Split:
        """Split r of a dataset with the seed, fractions and grouping of ``options`` (a stage's options,
        or :class:`SplitOptions`); a union dataset's split r is the union of its components'. A split
        with an empty training or test part is a :class:`UserError`."""
        opts = options if isinstance(options, SplitOptions) else SplitOptions.of(options)
        out = self._split(name, r, opts)
        if not out.train or not out.test:
            side = "test" if not out.test else "training"
            raise UserError(f"dataset {name!r}, split {r}: the {side} part is empty with --split-by "
                            f"{opts.split_by} ({len(out.train)} training, {len(out.test)} test records): "
                            "use --split-by random or formula, or a dataset with more records or groups")
        return out

    def _split(self, name: str, r: int, opts: SplitOptions) -> Split:
        memo = self.derived.setdefault("splits", {})
        if (name, r, opts) in memo:
            return memo[(name, r, opts)]
        if opts.split_by not in SPLIT_MODES:
            raise UserError(f"--split-by {opts.split_by!r}: use one of {', '.join(SPLIT_MODES)}")
        spec = self.registry.dataset(name)
        ids = self.dataset(name).records
        if spec.components:
            parts = [self._split(c, r, opts) for c in spec.components]
            out = parts[0]
            for p in parts[1:]:
                out = out | p
        elif opts.split_by != "random":
            from .overlap import group_keys

            # a record without a key (no readable formula nor structure) is a group of its own
            keys = {i: k or f"id:{i}" for i, k in group_keys(self, spec.name, opts.split_by).items()}
            out = make_grouped_split(keys, r, opts.seed, opts.test_fraction, opts.inner_val_fraction)
        elif spec.subset_of:
            parent = self.dataset(spec.subset_of).records
            out = self._follow(spec.name, r, opts, [(spec.subset_of, {i: i for i in ids if i in parent})])
        elif spec.plugin == USER_PROVIDER:
            from .overlap import leaders

            out = self._follow(spec.name, r, opts, leaders(self, spec.name, self._leader_candidates(spec)))
        else:
            out = make_split(spec.name, ids, r, opts.seed, opts.test_fraction, opts.inner_val_fraction)
        memo[(name, r, opts)] = out
        return out

    def split_rule(self, name: str) -> str:
        """How the random splits of an atomic dataset are made besides its own permutation: "" (its own,
        the built-ins'), ``subset_of:PARENT`` or ``follows shared records`` (a --dataset-file dataset).
        Part of a stage's key (only when not ""), so that stages stored before a dataset followed
        another's splits are not reused."""
        spec = self.registry.dataset(name)
        if spec.subset_of:
            return f"subset_of:{spec.subset_of}"
        return "follows shared records" if spec.plugin == USER_PROVIDER else ""

    def _follow(self, name: str, r: int, opts: SplitOptions, leaders: list[tuple[str, dict]]) -> Split:
        """Split r of dataset ``name`` whose records follow their twins in the ``leaders``
        ``[(dataset, {own id: id there})]`` (first leader first); the others get their own permutation."""
        side: dict[str, str] = {}
        for leader, mapping in leaders:
            s = self._split(leader, r, opts)
            test, val = set(s.test), set(s.inner_val)
            for mine, theirs in mapping.items():
                side.setdefault(mine, "test" if theirs in test else "val" if theirs in val else "train")
        rest = [i for i in self.dataset(name).records if i not in side]
        own = make_split(name, rest, r, opts.seed, opts.test_fraction, opts.inner_val_fraction) if rest \
            else Split((), (), (), ())
        test = sorted([i for i, s in side.items() if s == "test"] + list(own.test))
        val = sorted([i for i, s in side.items() if s == "val"] + list(own.inner_val))
        inner = sorted([i for i, s in side.items() if s == "train"] + list(own.inner_train))
        return Split(tuple(sorted(val + inner)), tuple(test), tuple(inner), tuple(val))

    def _leader_candidates(self, spec) -> list[str]:
        """The registered (plugin) datasets a user dataset may follow: atomic, with the same target,
        whose data loads (a registered dataset whose files are absent cannot be followed)."""
        out = []
        for name, other in sorted(self.registry.datasets.items()):
            if other.components or other.plugin == USER_PROVIDER or other.target != spec.target:
                continue
            try:
                self.dataset(name)
            except UserError:
                continue
            out.append(name)
        return out

    # ---- features ----------------------------------------------------------------------------
    def backbone(self, name: str):
        key = name.lower()
        if key not in self._backbones:
            self._backbones[key] = self.registry.backbone(key)
        return self._backbones[key]

    def feature_cache_path(self, backbone: str, dataset: str) -> Path:
        bb = self.backbone(backbone)
        plugins = self.registry.identities([("backbone", bb.name), ("dataset", dataset)])
        key = stable_hash({"backbone": bb.name, "settings": bb.settings(),
                           "data": self.dataset(dataset).fingerprint, "plugins": plugins})
        return self.cache_dir / "features" / f"{bb.name}-{dataset}-{key}.pt"

    def features(self, backbone: str, dataset: str, progress=None) -> dict:
        """id -> features of every featurisable record of ``dataset`` (cached on disk; computed once)."""
        bb = self.backbone(backbone)
        spec = self.registry.dataset(dataset)
        if spec.components:  # a union dataset reuses its components' features
            out: dict = {}
            for c in spec.components:
                out.update(self.features(backbone, c, progress))
            return out
        name = spec.name
        if (bb.name, name) in self._features:
            return self._features[(bb.name, name)]
        if (bb.name, name) in self._plugin_failures:
            raise self._plugin_failures[(bb.name, name)]
        path = self.feature_cache_path(backbone, name)
        cached = None
        if path.exists():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=False)
            except Exception:
                cached = None  # a broken cache file is recomputed, never used
        if cached is None:
            try:
                cached = self._featurise(bb, name, progress)
            except PluginFailure as exc:
                self._plugin_failures[(bb.name, name)] = exc
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(cached, tmp)
            os.replace(tmp, path)
        self.skipped.extend(RecordError(*e) for e in cached["errors"].values())
        self._features[(bb.name, name)] = cached["features"]
        return cached["features"]

    def _featurise(self, bb, name: str, progress=None) -> dict:
        """Features of every record of dataset ``name``: a :class:`RecordError` skips its record (bad data,
        cached with the features); any other exception is the plugin's bug: :class:`PluginFailure`, nothing
        cached (a fixed plugin featurises again)."""
        feats, errors = {}, {}
        first_bug, n_bugs = None, 0
        records = list(self.dataset(name).records.values())
        bar = progress(total=len(records), desc=f"featurise {bb.name}/{name}") if progress else None
        for rec in records:
            try:
                feats[rec.id] = bb.featurise(rec)
            except RecordError as exc:
                errors[rec.id] = exc
            except Exception as exc:
                n_bugs += 1
                if first_bug is None:
                    first_bug = (f"backbone {bb.name}, featurise on {name} record {rec.id!r}: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}", traceback.format_exc())
            if bar:
                bar.update(1)
        if bar:
            bar.close()
        if n_bugs:
            plugin = self.registry.providers.get(("backbone", bb.name), bb.name)
            raise PluginFailure(plugin, n_bugs, *first_bug)
        return {"features": feats, "errors": {k: (e.source, e.record_id, e.problem, e.hint)
                                              for k, e in errors.items()}}
