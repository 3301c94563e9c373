"""Screening: κ of new structures from the trained models of one cell (an ensemble), with a calibrated
interval and an applicability-domain signal.

The ensemble is the cell's final stage of every split (and seed): each model predicts κ in W/(m K) through
the batcher of training (:func:`paraisite_bench.train.predict`) and its checkpoint's transform; the
ensemble's κ is the geometric mean over models.

Two intervals are given:

* ``kappa_p10``–``kappa_p90``: the 10th–90th percentile of the models' κ (log space). Its coverage on the
  run's validation parts is measured and shown, not tuned: with a handful of models it is narrow.
* ``kappa_low``–``kappa_high`` (the one to use): κ × 10^(±q), q the 80th percentile of the validation
  errors |log10 κ_model − log10 κ_true| in the input's domain-distance bin (split-conformal, per bin).
  The validation errors are those of each split model on its own 20 % part of the cell's training dataset,
  which that model did not train on; the ensemble's error is usually smaller, so the interval is rather
  conservative. With the paper's selection mode the epoch was chosen on that same part, which makes the
  errors slightly optimistic (``heldout`` runs do not have this bias).

Applicability domain: the Euclidean distance from an input to its nearest training record in each model's
backbone representation (``ParAIsiteModel.backbone``), divided by the median nearest-neighbour distance
among that model's training records, averaged over models; ``outside_domain`` when it exceeds the 95th
percentile of the validation records' distances.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from markupsafe import Markup
from tqdm import tqdm

from .checkpoint import RestoredModel, model_from_checkpoint
from .context import Context
from .data import DatasetSpec, Record, records_fingerprint, validate_records
from .errors import RecordError, UserError
from .figures import _log_axis, plt, to_svg
from .outputs import write_csv
from .plugins import Registry
from .protocol import Protocol
from .report import fragment, templates
from .targets import LOG_FLOOR
from .train import predict as model_predict
from .userdata import PROVIDER, add_datasets, cif_record, read_dataset_file

#: the calibrated interval's target coverage, the raw interval's percentiles, the domain threshold's
#: percentile of validation distances
COVERAGE = 0.8
RAW_PERCENTILES = (10.0, 90.0)
DOMAIN_PERCENTILE = 95.0
#: records per featurisation chunk (a cache entry of its own; the unit of work of --workers)
CHUNK = 256
#: value given to inputs without κ so that they pass the dataset rules (never shown: ``kappa_true`` is empty)
NO_KAPPA = 1.0


@contextmanager
def use_threads(n: int):
    """Torch threads of this process while the block runs. One by default, as for training: a batch of small
    graphs does not scale past one thread, and on a busy machine two threads were 8–22× slower than one
    (MEGNet forward, 1,000 AFLOW structures: 3.1 s with 1 thread, 25–69 s with 2, 2 cores at load 8–10)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def log10k(kappa) -> np.ndarray:
    """log10 κ with the metrics' floor (the κ transform's inverse can return values ≤ 0)."""
    return np.log10(np.maximum(np.asarray(kappa, dtype=np.float64), LOG_FLOOR))


# ---- the ensemble -------------------------------------------------------------------------------


@dataclass
class Member:
    """One model of the ensemble: a self-describing checkpoint (``model`` holds the weights of the run's
    selection mode) and, for the domain signal, the representations of the records it trained on."""

    split: int
    seed: int
    stage_key: str
    checkpoint: dict
    train_ids: list[str] = field(default_factory=list)
    train_reps: np.ndarray | None = None
    #: median nearest-neighbour distance among the training records (the distance unit)
    scale: float = 1.0

    @property
    def column(self) -> str:
        return f"kappa_split{self.split}_seed{self.seed}"


@dataclass
class ModelSet:
    """What prediction needs, from a run or a bundle: the members, the backbone and the identity of the
    plugin it was trained with, the calibration, and provenance (run, cell, protocol, selection…)."""

    backbone: str
    members: list[Member]
    plugin: dict
    provenance: dict
    metrics: list[dict] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)

    @property
    def cell(self) -> dict:
        return self.provenance["cell"]


def restore(source, modelset: ModelSet) -> list[RestoredModel]:
    """The members' models, rebuilt with the registered backbone (``source``: Registry or Context)."""
    return [model_from_checkpoint(source, m.checkpoint) for m in modelset.members]


def forward(restored: RestoredModel, feats: list) -> tuple[np.ndarray, np.ndarray]:
    """κ and the backbone representation of each featurised record, in one pass of the training batcher
    (the representation is read by a hook on the backbone module)."""
    reps: list[torch.Tensor] = []
    hook = restored.model.backbone.register_forward_hook(
        lambda _module, _args, out: reps.append(out.reshape(out.shape[0], -1).detach().cpu())
    )
    try:
        raw = model_predict(restored.model, restored.backbone, feats)
    finally:
        hook.remove()
    kappa = np.asarray(restored.transform.inverse(raw.numpy()), dtype=np.float64)
    dim = reps[0].shape[1] if reps else 0
    return kappa, (torch.cat(reps).numpy().astype(np.float64) if reps else np.zeros((0, dim)))


def nearest(reps: np.ndarray, reference: np.ndarray, exclude_self: bool = False) -> np.ndarray:
    """Distance from each row of ``reps`` to its nearest row of ``reference``."""
    if len(reps) == 0 or len(reference) == 0:
        return np.full(len(reps), np.inf)
    d = torch.cdist(torch.as_tensor(reps), torch.as_tensor(reference)).numpy()
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def domain_reference(member: Member, train_reps: np.ndarray, train_ids: Sequence[str]) -> None:
    """Keep a member's training representations and their median nearest-neighbour distance."""
    member.train_ids, member.train_reps = list(train_ids), train_reps.astype(np.float32)
    nn = nearest(train_reps, train_reps, exclude_self=True)
    finite = nn[np.isfinite(nn)]
    member.scale = float(np.median(finite)) if len(finite) and np.median(finite) > 0 else 1.0


def member_distance(member: Member, reps: np.ndarray) -> np.ndarray:
    return nearest(reps, member.train_reps.astype(np.float64)) / member.scale


# ---- calibration --------------------------------------------------------------------------------


def distance_bins(dist: np.ndarray) -> list[float]:
    """Inner edges of the domain-distance bins: quartiles of the validation distances (fewer bins when
    there are fewer than 80 validation records, so that each bin holds about 20)."""
    n_bins = min(4, max(1, len(dist) // 20))
    return [float(e) for e in np.quantile(dist, np.arange(1, n_bins) / n_bins)] if n_bins > 1 else []


def bin_of(edges: Sequence[float], dist) -> np.ndarray:
    return np.searchsorted(
        np.asarray(edges, dtype=np.float64), np.asarray(dist, dtype=np.float64), side="right"
    )


def half_widths(errors: np.ndarray, bins: np.ndarray, n_bins: int) -> list[float]:
    """Per bin, the COVERAGE quantile of the errors (``higher``: at least COVERAGE of them are covered)."""
    everywhere = float(np.quantile(errors, COVERAGE, method="higher"))
    return [
        float(np.quantile(errors[bins == b], COVERAGE, method="higher")) if np.any(bins == b) else everywhere
        for b in range(n_bins)
    ]


def calibrate(true, own, dist, raw_low, raw_high) -> dict:
    """The calibration of an ensemble from its validation pairs (a split model and a record of its own
    validation part): the record's κ, that model's κ, its domain distance in that model's representation,
    and the raw P10–P90 interval of all models at that record."""
    true, own, dist = (np.asarray(a, dtype=np.float64) for a in (true, own, dist))
    if not len(true):
        raise UserError("the cell's models have no validation record to calibrate their interval on")
    errors = np.abs(log10k(own) - log10k(true))
    edges = distance_bins(dist)
    bins = bin_of(edges, dist)
    q = half_widths(errors, bins, len(edges) + 1)
    covered = errors <= np.asarray(q)[bins]
    raw = (true >= np.asarray(raw_low)) & (true <= np.asarray(raw_high))
    return {
        "n": int(len(true)),
        "coverage_target": COVERAGE,
        "edges": edges,
        "half_width": q,
        "coverage": float(covered.mean()),
        "coverage_crossfit": _crossfit(errors, bins, len(q)),
        "raw_percentiles": list(RAW_PERCENTILES),
        "raw_coverage": float(raw.mean()),
        "threshold": float(np.percentile(dist, DOMAIN_PERCENTILE)),
        "threshold_rule": f"{DOMAIN_PERCENTILE:g}th percentile of the validation records' distances",
        "bins": _bin_rows(errors, dist, bins, edges, q, own, true),
    }


def _crossfit(errors: np.ndarray, bins: np.ndarray, n_bins: int) -> float | None:
    """Coverage of half-widths fitted on one half of the validation pairs and applied to the other (and
    back): how well the interval holds on records it was not fitted on."""
    halves = np.arange(len(errors)) % 2
    if len(errors) < 10:
        return None
    covered = 0
    for h in (0, 1):
        fit, use = halves == h, halves != h
        q = np.asarray(half_widths(errors[fit], bins[fit], n_bins))
        covered += int((errors[use] <= q[bins[use]]).sum())
    return covered / len(errors)


def _bin_rows(errors, dist, bins, edges, q, own, true) -> list[dict]:
    """Error against domain distance, per bin."""
    bounds = [0.0, *edges, math.inf]
    rows = []
    for b in range(len(q)):
        sel = bins == b
        rows.append(
            {
                "from": bounds[b],
                "to": bounds[b + 1],
                "n": int(sel.sum()),
                "median_error_log10": float(np.median(errors[sel])) if sel.any() else None,
                "mape": float(np.mean(np.abs(own[sel] - true[sel]) / true[sel])) if sel.any() else None,
                "half_width": q[b],
            }
        )
    return rows


# ---- inputs -------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Records to predict (those with κ keep it in ``kappa``), and one line per input that was skipped."""

    records: list[Record] = field(default_factory=list)
    kappa: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _folder_records(path: Path) -> tuple[list[Record], str | None]:
    """The records of a folder: its *.cif files, with κ from its one CSV when it holds one."""
    if len(list(path.glob("*.csv"))) == 1:
        return read_dataset_file(path, str(path), kappa=False), None
    cifs = sorted(path.glob("*.cif"))
    if not cifs:
        return [], f"{path}: the folder holds no *.cif file — give CIF files or a folder of them"
    return [cif_record(p, str(p)) for p in cifs], None


def _raw_records(path: Path) -> tuple[list[Record], str | None]:
    if not path.exists():
        return [], f"{path}: no such file or folder"
    if path.is_dir():
        return _folder_records(path)
    if path.suffix.lower() == ".cif":
        return [cif_record(path, str(path))], None
    try:
        return read_dataset_file(path, str(path), kappa=False), None
    except UserError as exc:
        return [], str(exc)


def read_inputs(paths: Sequence[str | Path]) -> Inputs:
    """The records of every input (CIF files, folders of CIFs, CSV or JSON files as ``--dataset-file``
    reads them, κ optional), checked by the dataset rules: a bad κ or a repeated id is skipped in one line;
    an unreadable or empty input is one line too, and the other inputs are still read."""
    out = Inputs()
    raw: list[Record] = []
    for p in paths:
        records, problem = _raw_records(Path(p))
        if problem:
            out.skipped.append(problem)
        raw.extend(records)
    given = {id(r) for r in raw if r.value not in (None, "")}
    marked = [r if id(r) in given else _with_value(r, NO_KAPPA) for r in raw]
    good, bad = validate_records("input", marked)
    source = {r.id: r.source for r in reversed(raw)}  # the first record of an id names its file
    out.skipped.extend(
        str(RecordError(source.get(e.record_id, e.source), e.record_id, e.problem, e.hint)) for e in bad
    )
    has_kappa = {r.id for r, m in zip(raw, marked) if id(r) in given}
    for r in good:
        out.records.append(r)
        if r.id in has_kappa:
            out.kappa[r.id] = float(r.value)
    return out


def _with_value(record: Record, value: float) -> Record:
    fields_ = {k: getattr(record, k) for k in record.__dataclass_fields__}
    return type(record)(**{**fields_, "value": value})


# ---- featurisation ------------------------------------------------------------------------------


def _records_loader(records: tuple[Record, ...], _ctx) -> list[Record]:
    return list(records)


def _chunk_specs(records: list[Record]) -> list[DatasetSpec]:
    """The inputs as datasets of CHUNK records, named by their content: each is featurised (and cached)
    by :meth:`Context.features` like a dataset, keyed by its records' checksum."""
    specs = []
    for i in range(0, len(records), CHUNK):
        part = tuple(records[i : i + CHUNK])
        name = f"input-{records_fingerprint(part)}"
        specs.append(
            DatasetSpec(
                name=name,
                description="predict inputs",
                loader=partial(_records_loader, part),
                plugin=PROVIDER,
            )
        )
    return specs


def _register(registry: Registry, specs: list[DatasetSpec]) -> None:
    add_datasets(registry, [s for s in specs if s.name not in registry.datasets])


def _featurise_chunk(
    plugin_modules: tuple[str, ...], cache_dir: Path, backbone: str, spec: DatasetSpec
) -> None:
    """Worker process: featurise one chunk into the shared cache (the parent reads it back)."""
    from .orchestrate import load_plugins

    registry = load_plugins(plugin_modules)
    _register(registry, [spec])
    torch.set_num_threads(1)
    Context(registry, Path("."), Protocol(), cache_dir).features(backbone, spec.name)


class _ChunkBar:
    """What :meth:`Context.features` sees as its progress bar: forwards to the one bar of all inputs."""

    def __init__(self, bar, **_):
        self.bar = bar

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        pass


def featurise_inputs(
    ctx: Context,
    backbone: str,
    records: list[Record],
    workers: int = 1,
    progress: bool | None = None,
    plugin_modules: tuple[str, ...] = (),
) -> tuple[dict, list[str]]:
    """id -> features of the inputs the backbone can use, and one line per input it cannot use (broken or
    disordered CIF, element outside the backbone's list…). Cached like datasets; ``workers`` processes
    featurise chunks in parallel."""
    specs = _chunk_specs(records)
    _register(ctx.registry, specs)
    ctx.skipped = []
    bar = tqdm(
        total=len(records),
        desc=f"featurise {backbone}",
        unit="structure",
        disable=not sys.stderr.isatty() if progress is None else not progress,
    )
    if workers > 1:
        todo = [s for s in specs if not ctx.feature_cache_path(backbone, s.name).exists()]
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [
                (s, pool.submit(_featurise_chunk, plugin_modules, ctx.cache_dir, backbone, s)) for s in todo
            ]
            for s, fut in futures:
                fut.result()
                bar.update(len(s.loader(None)))
    feats: dict = {}
    for s in specs:
        feats.update(ctx.features(backbone, s.name, progress=partial(_ChunkBar, bar)))
    bar.close()
    return feats, [str(e) for e in ctx.skipped]


# ---- prediction ---------------------------------------------------------------------------------


@dataclass
class Predictions:
    """Per input (in input order): each model's κ, the ensemble's κ and intervals, the domain distance."""

    ids: list[str]
    per_model: np.ndarray
    kappa: np.ndarray
    low: np.ndarray
    high: np.ndarray
    p10: np.ndarray
    p90: np.ndarray
    distance: np.ndarray
    outside: np.ndarray


def ensemble(per_model: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometric mean over models (axis 1), and the raw P10 and P90 of the models' κ in log space."""
    logs = log10k(per_model)
    lo, hi = np.percentile(logs, RAW_PERCENTILES, axis=1)
    return 10 ** logs.mean(axis=1), 10**lo, 10**hi


def predict_features(
    modelset: ModelSet, restored: list[RestoredModel], ids: list[str], feats: list
) -> Predictions:
    """Run every member on the featurised inputs; the interval's half-width comes from the calibration bin
    of each input's domain distance."""
    kappas, dists = [], []
    for member, model in zip(modelset.members, restored):
        kappa, reps = forward(model, feats)
        kappas.append(kappa)
        dists.append(member_distance(member, reps))
    per_model = np.stack(kappas, axis=1) if kappas else np.zeros((len(ids), 0))
    kappa, p10, p90 = ensemble(per_model)
    distance = np.mean(np.stack(dists, axis=1), axis=1)
    cal = modelset.calibration
    q = np.asarray(cal["half_width"])[bin_of(cal["edges"], distance)]
    return Predictions(
        ids, per_model, kappa, kappa / 10**q, kappa * 10**q, p10, p90, distance, distance > cal["threshold"]
    )


def screen(
    modelset: ModelSet,
    ctx: Context,
    inputs: Inputs,
    workers: int = 1,
    progress: bool | None = None,
    plugin_modules: tuple[str, ...] = (),
    announce=None,
) -> tuple[Predictions, list[str]]:
    """Featurise and predict the inputs; the lines of the inputs that could not be used (each passed to
    ``announce`` too). Nothing left to predict is one line (a :class:`UserError`)."""
    feats, bad = featurise_inputs(ctx, modelset.backbone, inputs.records, workers, progress, plugin_modules)
    skipped = inputs.skipped + bad
    for line in skipped if announce else ():
        announce(line)
    ids = [r.id for r in inputs.records if r.id in feats]
    if not ids:
        raise UserError(f"nothing to predict: none of the inputs could be used ({len(skipped)} skipped)")
    restored = restore(ctx, modelset)
    return predict_features(modelset, restored, ids, [feats[i] for i in ids]), skipped


# ---- outputs ------------------------------------------------------------------------------------


def prediction_rows(modelset: ModelSet, inputs: Inputs, pred: Predictions) -> list[dict]:
    """One row per input, sorted by κ (lowest first): κ, intervals, each model's κ, domain, errors."""
    by_id = {r.id: r for r in inputs.records}
    rows = []
    for i, rid in enumerate(pred.ids):
        rec = by_id[rid]
        row = {
            "id": rid,
            "formula": rec.formula,
            "source": rec.source,
            "kappa_pred": pred.kappa[i],
            "kappa_low": pred.low[i],
            "kappa_high": pred.high[i],
            "kappa_p10": pred.p10[i],
            "kappa_p90": pred.p90[i],
        }
        row.update({m.column: pred.per_model[i, k] for k, m in enumerate(modelset.members)})
        row.update(domain_distance=pred.distance[i], outside_domain=bool(pred.outside[i]))
        true = inputs.kappa.get(rid)
        row.update(
            kappa_true=true if true is not None else "",
            abs_error=abs(pred.kappa[i] - true) if true is not None else "",
            rel_error=abs(pred.kappa[i] - true) / true if true is not None else "",
        )
        rows.append(row)
    rows.sort(key=lambda r: (r["kappa_pred"], r["id"]))
    return [{"rank": n + 1, **r} for n, r in enumerate(rows)]


def _rounded(row: dict) -> dict:
    """Predicted numbers to 6 significant digits (the models' float32 precision); inputs as given."""
    return {k: (float(f"{v:.6g}") if isinstance(v, (float, np.floating)) and k != "kappa_true" else v)
            for k, v in row.items()}


def write_predictions(path: Path, rows: list[dict], limit: int | None = None) -> None:
    fields = list(rows[0]) if rows else ["rank", "id"]
    write_csv(Path(path), fields, [_rounded(r) for r in rows[:limit]])


def summary_lines(rows: list[dict], modelset: ModelSet) -> list[str]:
    """What the command prints: counts, the lowest κ, and the errors when κ was given."""
    n_out = sum(r["outside_domain"] for r in rows)
    lines = [
        f"{len(rows)} predicted with {len(modelset.members)} model(s) of {cell_label(modelset.cell)}; "
        f"{n_out} outside the training domain"
    ]
    lines += [
        f"  {r['rank']:>4}. {r['id']} {r['formula']}: κ = {r['kappa_pred']:.3g} W/(m K) "
        f"[{r['kappa_low']:.3g}, {r['kappa_high']:.3g}]"
        + ("  (outside domain)" if r["outside_domain"] else "")
        for r in rows[:5]
    ]
    known = [r for r in rows if r["kappa_true"] != ""]
    if known:
        inside = np.mean([r["kappa_low"] <= r["kappa_true"] <= r["kappa_high"] for r in known])
        lines.append(
            f"  with κ given ({len(known)}): MAPE {np.mean([r['rel_error'] for r in known]):.3f}, "
            f"interval coverage {inside:.2f}"
        )
    return lines


def cell_label(cell: dict) -> str:
    return f"{cell['backbone']} × {cell['strategy']} × {cell['train']}"


# ---- the page -----------------------------------------------------------------------------------

#: inputs shown in the interval figure (the lowest κ first)
FIGURE_ROWS = 40


def interval_figure(rows: list[dict]) -> str:
    """κ with its calibrated interval (and the models' P10–P90) on a log axis, lowest κ first."""
    shown = rows[:FIGURE_ROWS]
    fig, ax = plt.subplots(figsize=(11, 3.4))
    x = np.arange(len(shown))
    k = np.array([r["kappa_pred"] for r in shown])
    for lo_key, hi_key, width, colour_, label in (
        ("kappa_low", "kappa_high", 1.0, "#1f77b4", "calibrated interval"),
        ("kappa_p10", "kappa_p90", 3.0, "#ff7f0e", "models P10–P90"),
    ):
        lo = np.array([r[lo_key] for r in shown])
        hi = np.array([r[hi_key] for r in shown])
        ax.vlines(x, lo, hi, colors=colour_, linewidth=width, label=label)
    out = np.array([r["outside_domain"] for r in shown], dtype=bool)
    ax.plot(x[~out], k[~out], "o", color="#222222", markersize=3, label="κ (geometric mean)")
    ax.plot(x[out], k[out], "o", color="#b00000", markersize=4, label="κ, outside the training domain")
    known = [(i, r["kappa_true"]) for i, r in enumerate(shown) if r["kappa_true"] != ""]
    if known:
        ax.plot(
            [i for i, _ in known], [v for _, v in known], "x", color="#2ca02c", markersize=4, label="κ given"
        )
    _log_axis(ax)
    ax.set_xticks(x)
    ax.set_xticklabels([r["formula"] or r["id"] for r in shown], rotation=90)
    ax.set_ylabel("κ (W/(m K))")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, frameon=False)
    return to_svg(fig, salt="predictions")


def report_style() -> Markup:
    """The report's stylesheet (the <style> element of templates/report.html), so that both pages look
    alike without a second copy of it."""
    source = templates().loader.get_source(templates(), "report.html")[0]
    found = re.search(r"<style>.*?</style>", source, flags=re.S)
    return Markup(found.group(0) if found else "")


def render_predictions(
    modelset: ModelSet, rows: list[dict], skipped: list[str], shown: int | None = None
) -> str:
    """predictions.html: one offline file (inline CSS and SVG)."""
    shown_rows = rows[:shown] if shown else rows
    known = [r for r in rows if r["kappa_true"] != ""]
    coverage = (
        np.mean([r["kappa_low"] <= r["kappa_true"] <= r["kappa_high"] for r in known]) if known else None
    )
    return fragment(
        "predictions.html",
        style=report_style(),
        modelset=modelset,
        rows=shown_rows,
        n_rows=len(rows),
        skipped=skipped,
        figure=Markup(interval_figure(rows)) if rows else "",
        columns=[m.column for m in modelset.members],
        label=cell_label(modelset.cell),
        known=len(known),
        input_coverage=coverage,
        inf=math.inf,
        generated=dt.datetime.now().isoformat(timespec="seconds"),
    )


def write_prediction_files(
    modelset: ModelSet,
    inputs: Inputs,
    pred: Predictions,
    skipped: list[str],
    out: Path,
    html: Path | None = None,
    top: int | None = None,
) -> list[dict]:
    """predictions.csv (the ``top`` lowest κ, or all) and predictions.html next to it; the rows."""
    rows = prediction_rows(modelset, inputs, pred)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_predictions(out, rows, top)
    html = Path(html) if html else out.with_suffix(".html")
    html.write_text(render_predictions(modelset, rows, skipped, top), encoding="utf-8")
    return rows
