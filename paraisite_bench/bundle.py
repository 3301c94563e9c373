"""The models of one cell of a run, and model bundles (``.pbm``) that carry them without the run.

A cell is (backbone, strategy, train); its models are the final stage of each split (and seed), read with
the run's selection mode (``paper``/``heldout``: the checkpoint's ``model``, ``last``: its ``last_model``).
:func:`modelset_from_run` also computes what prediction needs besides the weights: each model's training
records in its backbone representation (the domain signal) and the calibration on the models' validation
parts (:func:`paraisite_bench.predict.calibrate`).

A bundle is one ``torch.save``'d dict: per model its self-describing checkpoint
(:func:`paraisite_bench.checkpoint.checkpoint_payload`: backbone name and settings, head widths, target
transform, weights), split, seed, stage key and training representations; and the backbone plugin's identity
(distribution, version, source hash), the run's protocol, selection mode, plugins, validation metrics and the
calibration. Loading it with another version of the backbone plugin is refused in one line. A bundle is a
pickle: load only bundles you trust.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .context import Context
from .errors import UserError
from .plugins import Registry, plugin_distributions
from .predict import (
    Member,
    ModelSet,
    calibrate,
    domain_reference,
    ensemble,
    forward,
    member_distance,
    restore,
)
from .protocol import Protocol
from .results import BASELINE, read_csv
from .store import Store
from .targets import KAPPA_KIND
from .train import StageSpec, stage_ids

BUNDLE_FORMAT = "paraisite-bench model bundle"
BUNDLE_VERSION = 1
#: the metrics of results.csv kept with a bundle (per split model, on its validation part)
METRICS = ("mape", "mae_log", "spearman", "r2_log", "n_test", "epoch")


# ---- the run --------------------------------------------------------------------------------------


def read_run(run_dir: Path) -> tuple[dict, list[dict]]:
    """run.json and results.csv of a run directory (one line if it is not one)."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").exists() or not (run_dir / "store.sqlite").exists():
        raise UserError(
            f"{run_dir} is not a run directory (no run.json or store.sqlite): give the --out of "
            "a `paraisite-bench run`, or --model FILE.pbm"
        )
    info = json.loads((run_dir / "run.json").read_text())
    rows = read_csv(run_dir / "results.csv")
    if not rows:
        raise UserError(
            f"{run_dir} has no results.csv rows: run `paraisite-bench report {run_dir}` first "
            "(or finish the run)"
        )
    return info, rows


def selection_of(info: dict) -> str:
    return (info.get("protocol") or {}).get("selection", "paper")


def choose_cell(
    info: dict,
    rows: list[dict],
    backbone: str | None = None,
    strategy: str | None = None,
    train: str | None = None,
) -> tuple[dict, str]:
    """The cell to use and why: the given one, or among those matching the given names the one with the
    lowest mean MAPE on its own training dataset's test parts, under the run's selection mode."""
    selection = selection_of(info)
    scores: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["backbone"] == BASELINE or r["selection"] != selection or r["test"] != r["train"]:
            continue
        if any(
            want and r[k] != want.lower()
            for k, want in (("backbone", backbone), ("strategy", strategy), ("train", train))
        ):
            continue
        if r.get("mape") not in (None, ""):
            scores[(r["backbone"], r["strategy"], r["train"])].append(float(r["mape"]))
    if not scores:
        cells = sorted(
            {(r["backbone"], r["strategy"], r["train"]) for r in rows if r["backbone"] != BASELINE}
        )
        raise UserError(
            f"no trained cell of the run matches --backbone {backbone or '*'} --strategy "
            f"{strategy or '*'} --train {train or '*'} with a result on its own training dataset; "
            f"cells: {', '.join(' × '.join(c) for c in cells) or 'none'}"
        )
    best = min(scores, key=lambda c: (np.mean(scores[c]), c))
    cell = dict(zip(("backbone", "strategy", "train"), best))
    mean = float(np.mean(scores[best]))
    if len(scores) == 1 and backbone and strategy and train:
        why = f"as given (mean MAPE {mean:.3f} on its test parts, {len(scores[best])} models, {selection})"
    else:
        why = (
            f"the lowest mean MAPE on its own training dataset's test parts among {len(scores)} matching "
            f"cell(s): {mean:.3f} over {len(scores[best])} models (selection {selection})"
        )
    return cell, why


def cell_models(rows: list[dict], cell: dict) -> list[tuple[int, int, str]]:
    """(split, seed, stage key) of each model of the cell (the final stage of a split and seed)."""
    found = {}
    for r in rows:
        if all(r[k] == v for k, v in cell.items()):
            found[r["stage_key"]] = (int(r["split"]), int(r.get("seed") or 0), r["stage_key"])
    return sorted(found.values())


def _identity_text(ident: dict) -> str:
    return f"{ident.get('distribution')} {ident.get('version')} (source {str(ident.get('source'))[:12]})"


def check_plugin(registry: Registry, backbone: str, trained: dict, where: str) -> None:
    """One line unless the installed plugin of ``backbone`` is the one the models were trained with."""
    plugin = trained.get("plugin", "?")
    wanted = _identity_text(trained)
    if backbone not in registry.backbones:
        raise UserError(
            f"{where}: its models need backbone {backbone!r} from plugin {plugin} ({wanted}), "
            f"which is not installed: install {trained.get('distribution')}=={trained.get('version')}"
        )
    current = dict(plugin_distributions(registry).get(registry.providers[("backbone", backbone)], {}))
    same = all(current.get(k) == trained.get(k) for k in ("distribution", "version", "source"))
    if not same:
        have = _identity_text(current)
        raise UserError(
            f"{where}: its {backbone} models were trained with plugin {plugin} {wanted}, but "
            f"{have} is installed: install the version they were trained with, or retrain "
            "(paraisite-bench run) and export again with the installed one"
        )


def trained_plugin(info: dict, registry: Registry, backbone: str) -> dict:
    """The identity (run.json ``plugins``) of the plugin that provided ``backbone`` when the run trained."""
    plugin = registry.providers.get(("backbone", backbone), backbone)
    return {"plugin": plugin, **(info.get("plugins") or {}).get(plugin, {})}


# ---- the models of a cell -------------------------------------------------------------------------


def _member(store: Store, key: str, split: int, seed: int, selection: str) -> Member:
    row = store.stage(key)
    if row is None or row["status"] != "done" or not store.checkpoint_path(key).exists():
        raise UserError(f"stage {key} (split {split}) is not in the run's store: resume the run first")
    ckpt = load_checkpoint(store.checkpoint_path(key), row["checksum"])
    if selection == "last":
        ckpt["model"] = ckpt["last_model"]
    ckpt.pop("last_model", None)  # one reading per model: the run's selection mode
    return Member(split=split, seed=seed, stage_key=key, checkpoint=ckpt)


def modelset_from_run(
    run_dir: Path,
    registry: Registry,
    data_dir: Path,
    cache_dir: Path | None = None,
    backbone: str | None = None,
    strategy: str | None = None,
    train: str | None = None,
) -> tuple[ModelSet, Context]:
    """The cell's models with their domain reference and calibration, and the run's context."""
    run_dir = Path(run_dir)
    info, rows = read_run(run_dir)
    cell, why = choose_cell(info, rows, backbone, strategy, train)
    check_plugin(
        registry, cell["backbone"], trained_plugin(info, registry, cell["backbone"]), f"run {run_dir}"
    )
    selection = selection_of(info)
    store = Store(run_dir / "store.sqlite", lock=False)
    try:
        models = cell_models(rows, cell)
        members = [_member(store, key, split, seed, selection) for split, seed, key in models]
        specs = [StageSpec.from_record(store.stage(key)["spec"]) for _, _, key in models]
    finally:
        store.close()
    metrics = [
        {"split": r["split"], "seed": r.get("seed"), **{m: r.get(m) for m in METRICS}}
        for r in rows
        if all(r[k] == v for k, v in cell.items())
        and r["test"] == cell["train"]
        and r["selection"] == selection
    ]
    provenance = {
        "run": str(run_dir.resolve()),
        "cell": cell,
        "chosen": why,
        "selection": selection,
        "protocol": info.get("protocol"),
        "preset": info.get("preset"),
        "command": info.get("command"),
        "plugins": info.get("plugins"),
        "versions": info.get("versions"),
        "data": info.get("data"),
        "stage_keys": [k for _, _, k in models],
        "chains": sorted({r["chain"] for r in rows if all(r[k] == v for k, v in cell.items())}),
    }
    modelset = ModelSet(
        cell["backbone"], members, trained_plugin(info, registry, cell["backbone"]), provenance, metrics
    )
    ctx = Context(registry, data_dir, Protocol.from_dict(info.get("protocol") or {}), cache_dir)
    calibrate_on_run(ctx, modelset, specs)
    return modelset, ctx


def calibrate_on_run(ctx: Context, modelset: ModelSet, specs: list[StageSpec]) -> None:
    """Fill each member's domain reference (its training records' representations) and the calibration
    from the validation parts (each model's 20 % part of the cell's training dataset)."""
    train = modelset.cell["train"]
    if ctx.registry.dataset(train).target.kind is not KAPPA_KIND:
        raise UserError(
            f"cell {train}: its target is {ctx.registry.dataset(train).target.name}, not κ; "
            "predict screens κ models only"
        )
    feats = ctx.features(modelset.backbone, train)
    records = ctx.dataset(train).records
    ids = sorted(feats)
    index = {i: n for n, i in enumerate(ids)}
    outputs = [forward(model, [feats[i] for i in ids]) for model in restore(ctx, modelset)]
    _, p10, p90 = ensemble(np.stack([k for k, _ in outputs], axis=1))
    true, own, dist, low, high = [], [], [], [], []
    for member, spec, (kappa, reps) in zip(modelset.members, specs, outputs):
        train_ids = stage_ids(ctx, spec)[0]
        domain_reference(member, reps[[index[i] for i in train_ids]], train_ids)
        val = [index[i] for i in ctx.split(spec.dataset, spec.split, spec.options).test if i in index]
        true += [records[ids[n]].value for n in val]
        own += list(kappa[val])
        dist += list(member_distance(member, reps[val]))
        low += list(p10[val])
        high += list(p90[val])
    modelset.calibration = calibrate(true, own, dist, low, high)


# ---- bundles --------------------------------------------------------------------------------------


def save_bundle(modelset: ModelSet, path: Path) -> str:
    """Write the bundle atomically; return its digest."""
    payload = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "backbone": modelset.backbone,
        "plugin": modelset.plugin,
        "metrics": modelset.metrics,
        "calibration": modelset.calibration,
        "provenance": {**modelset.provenance, "exported": dt.datetime.now().isoformat(timespec="seconds")},
        "members": [
            {
                "split": m.split,
                "seed": m.seed,
                "stage_key": m.stage_key,
                "checkpoint": m.checkpoint,
                "train_ids": m.train_ids,
                "train_reps": torch.as_tensor(m.train_reps),
                "scale": m.scale,
            }
            for m in modelset.members
        ],
    }
    return save_checkpoint(Path(path), payload)


def load_bundle(path: Path, registry: Registry) -> ModelSet:
    """A bundle's models (one line if the file is not a bundle, or its backbone plugin is missing or of
    another version than the one its models were trained with)."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(
            f"--model {path}: cannot read it as a model bundle ({type(exc).__name__}); "
            "give a file written by `paraisite-bench export`"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != BUNDLE_FORMAT:
        raise UserError(
            f"--model {path}: not a paraisite-bench model bundle: give a file written by "
            "`paraisite-bench export`"
        )
    if payload.get("version", 0) > BUNDLE_VERSION:
        raise UserError(
            f"--model {path}: bundle version {payload['version']} is newer than this "
            f"paraisite-bench reads ({BUNDLE_VERSION}): upgrade paraisite-bench"
        )
    check_plugin(registry, payload["backbone"], payload["plugin"], f"bundle {path}")
    members = [
        Member(
            split=m["split"],
            seed=m["seed"],
            stage_key=m["stage_key"],
            checkpoint=m["checkpoint"],
            train_ids=list(m["train_ids"]),
            train_reps=m["train_reps"].numpy(),
            scale=float(m["scale"]),
        )
        for m in payload["members"]
    ]
    provenance = dict(payload["provenance"], bundle=str(path.resolve()))
    return ModelSet(
        payload["backbone"],
        members,
        payload["plugin"],
        provenance,
        payload["metrics"],
        payload["calibration"],
    )
