"""The model-selection stability study (the paper's Fig. 2): each candidate = backbone + pretraining
source trains the ParAIsite head and the backbone on one target dataset, repeated; candidates are
ranked by a stated, configurable rule.

What a repeat varies (as the paper did): repeat r trains on split r of the target (the same split r
for every candidate, so comparisons are paired) with training seed ``seed + r``. A candidate's
pretraining stage (e.g. CrabNet on matbench_expt_gap) is trained once, on split 0 of the pretraining
dataset with the protocol's seed, and shared by all repeats: it is the candidate, not what varies.
The stages go through the ordinary job graph, runner and store (keyed by hash, resumable,
``--workers``).
"""

from __future__ import annotations

import csv
import json
import sys
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .context import Context
from .errors import UserError
from .jobs import Cell, Plan, add_stage, init_name, input_mismatch
from .outputs import rewrite_outputs
from .report import ordered_sections
from .strategy import TARGET, Init, Stage

#: What the repeats vary, said wherever the study's numbers are shown.
REPEATS_VARY = ("repeat r = split r of the target (identical for every candidate) and training seed "
                "seed + r; each candidate's pretraining stage is trained once (split 0) and shared")


@dataclass(frozen=True)
class Candidate:
    """``<backbone>:<source>``: a backbone and where its weights come from before the target."""

    name: str
    backbone: str
    stages: tuple[Stage, ...]
    description: str


def parse_candidate(ctx: Context, text: str) -> Candidate:
    """``megnet:eform`` (published weights), ``megnet:bandgap`` (the backbone ``megnet_bandgap`` and
    its default weights), ``crabnet:expt_gap`` (random → pretraining dataset → target),
    ``<backbone>:scratch``, or ``<backbone>:<strategy>`` for any registered strategy."""
    reg = ctx.registry
    name = text.strip().lower()
    backbone, sep, source = name.partition(":")
    if not sep or not backbone or not source:
        raise UserError(f"candidate {text!r}: expected BACKBONE:SOURCE, e.g. megnet:eform or crabnet:expt_gap")
    bb = reg.backbone(backbone)
    if source in bb.weight_sources:
        return Candidate(name, bb.name, (Stage(Init.weights(source), TARGET),),
                         f"{bb.name}, published weights {source} → target")
    variant = f"{bb.name}_{source}"
    if variant in reg.backbones:
        vb = reg.backbone(variant)
        if vb.default_weights:
            return Candidate(name, vb.name, (Stage(Init.weights(vb.default_weights), TARGET),),
                             f"{vb.name}, published weights {vb.default_weights} → target")
    if source == "scratch":
        return Candidate(name, bb.name, (Stage(Init.random(), TARGET),), f"{bb.name}, random weights → target")
    if source in reg.datasets:
        label = reg.dataset(source).label
        return Candidate(name, bb.name, (Stage(Init.random(), source), Stage(Init.previous(), TARGET)),
                         f"{bb.name}, random weights → {label} → target")
    if source in reg.strategies:
        st = reg.strategy(source)
        return Candidate(name, bb.name, st.stages, f"{bb.name}, {st.description}")
    raise UserError(f"candidate {text!r}: {source!r} is neither a published-weights source of {bb.name} "
                    f"({', '.join(bb.weight_sources) or 'none'}), nor a dataset, nor a strategy "
                    "(see `paraisite-bench plugins`)")


def build_study_plan(ctx: Context, candidates: list[Candidate], target: str, repeats: int) -> Plan:
    """Stages of every candidate × repeat; pretraining stages are shared by the repeats. The plan is
    repeat-major (repeat 0 of every candidate, then repeat 1, ...), so that a run stopped early has
    the same number of repeats for every candidate."""
    reg = ctx.registry
    protocol = ctx.protocol
    target = reg.dataset(target).name
    plan = Plan()
    chains = {}
    for cand in candidates:
        bb = ctx.backbone(cand.backbone)
        chain = [Stage(s.init, target if s.dataset == TARGET else reg.dataset(s.dataset).name) for s in cand.stages]
        reason = input_mismatch(ctx, bb, [s.dataset for s in chain])
        if reason:
            raise UserError(f"candidate {cand.name}: {reason}")
        chains[cand.name] = (bb, chain)
    for r in range(repeats):
        for cand in candidates:
            bb, chain = chains[cand.name]
            parent = None
            labels = []
            for i, st in enumerate(chain):
                last = i == len(chain) - 1
                init = init_name(bb, st.init)
                options = protocol.training_options(st.dataset)
                split = r if last else 0
                if last:
                    options = dict(options, seed=protocol.seed + r, split_seed=protocol.seed)
                labels.append(f"{init}>{st.dataset}" if not labels else st.dataset)
                parent = add_stage(plan, ctx, bb, init, parent, st.dataset, split, options,
                                   f"{cand.name}:{'>'.join(labels)}#{split}")
            plan.evals.setdefault(parent, [target])
            plan.cells.append(Cell(bb.name, cand.name, target, target, r, parent, ">".join(labels)))
    return plan


# ---- the selection rule ---------------------------------------------------------------------------

_RULE = re.compile(r"^\s*(mean|median|worst)\s*(?:\+\s*([0-9]*\.?[0-9]+)\s*\*\s*std)?\s*$")


def parse_rule(text: str) -> tuple[str, float]:
    """``mean+1*std`` → ("mean", 1.0); ``mean``, ``median+0.5*std``, ``worst``. Lower score wins."""
    m = _RULE.match(text.lower())
    if not m:
        raise UserError(f"--rule {text!r}: expected mean, median or worst, optionally + K*std "
                        "(e.g. mean+1*std); the lowest score wins")
    return m.group(1), float(m.group(2) or 0.0)


def rank(per_candidate: dict[str, list[float]], rule: str) -> list[dict]:
    """One row per candidate (mean, std, worst, CV, score), best first under ``rule``."""
    stat, k = parse_rule(rule)
    rows = []
    for name, values in per_candidate.items():
        v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
        if len(v) == 0:
            rows.append({"candidate": name, "n": 0, "mean": math.nan, "std": math.nan, "worst": math.nan,
                         "best": math.nan, "median": math.nan, "cv": math.nan, "score": math.inf})
            continue
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        base = {"mean": mean, "median": float(np.median(v)), "worst": float(v.max())}[stat]
        rows.append({"candidate": name, "n": int(len(v)), "mean": mean, "std": std, "worst": float(v.max()),
                     "best": float(v.min()), "median": float(np.median(v)),
                     "cv": std / mean if mean else math.nan, "score": base + k * std})
    rows.sort(key=lambda r: (r["score"], r["candidate"]))
    for i, r in enumerate(rows, 1):
        r["rank"] = i
    return rows


# ---- notes: what a composition backbone cannot see ------------------------------------------------

def composition_notes(ctx: Context, backbones, datasets) -> list[str]:
    """Formulas that occur more than once with different values in a dataset (Dataset1's zincblende
    and wurtzite polymorphs): a composition backbone gets identical inputs for them. One note per
    dataset, only when a composition backbone is used. run.json and study.json keep them under "notes",
    which the report's notes section shows."""
    from pymatgen.core import Composition

    if not any(ctx.backbone(b).input_kind == "composition" for b in backbones):
        return []
    notes = []
    for d in dict.fromkeys(datasets):
        for atom in ctx.atomic_names(d):
            groups: dict[str, list] = {}
            for rec in ctx.dataset(atom).records.values():
                try:
                    key = Composition(rec.formula).reduced_formula
                except Exception:
                    key = rec.formula
                groups.setdefault(key, []).append(rec.kappa)
            dup = {f: v for f, v in groups.items() if len(v) > 1 and len(set(v)) > 1}
            if dup:
                examples = ", ".join(f"{f} ({' vs '.join(f'{x:.3g}' for x in v)})" for f, v in list(dup.items())[:3])
                note = (f"{ctx.registry.dataset(atom).label}: {len(dup)} formulas occur more than once with "
                        f"different values (e.g. {examples}); a composition backbone sees identical inputs "
                        "for them and cannot tell them apart")
                if note not in notes:
                    notes.append(note)
    return notes


# ---- outputs --------------------------------------------------------------------------------------

def collect(plan: Plan, store, ctx: Context) -> list[dict]:
    """One row per candidate × repeat from the store."""
    rows = []
    for cell in plan.cells:
        ev = store.evals(cell.stage_key).get(cell.test)
        st = store.stage(cell.stage_key)
        spec = plan.stages[cell.stage_key]
        rows.append({"candidate": cell.strategy, "backbone": cell.backbone, "repeat": cell.split,
                     "split": spec.split, "seed": spec.options["seed"], "dataset": cell.test,
                     "mape": ev["value"] if ev else None, "n_test": ev["n_test"] if ev else None,
                     "best_epoch": st["best_epoch"] if st and st["status"] == "done" else None,
                     "wall_s": st["wall_s"] if st and st["status"] == "done" else None,
                     "chain": cell.chain})
    return rows


def plot_svg(runs: list[dict], ranked: list[dict], dataset_label: str, rule: str, salt: str = "study") -> str:
    """A Fig.-2-style plot: per candidate the MAPE of every repeat (box and points) with mean ± std, as an
    inline <svg> element (see :func:`paraisite_bench.figures.to_svg`)."""
    # matplotlib (and figures, which sets its backend) only when a study is drawn: `run` imports this module
    from matplotlib.figure import Figure

    from .figures import to_svg

    order = [r["candidate"] for r in ranked]
    values = [[x["mape"] for x in runs if x["candidate"] == c and x["mape"] is not None] for c in order]
    fig = Figure(figsize=(max(4.5, 1.4 * len(order) + 1.5), 4.0))
    ax = fig.add_subplot()
    pos = np.arange(1, len(order) + 1)
    nonempty = [(p, v) for p, v in zip(pos, values) if v]
    if nonempty:
        ax.boxplot([v for _, v in nonempty], positions=[p for p, _ in nonempty], widths=0.5,
                   showfliers=False, medianprops={"color": "0.4"})
    for p, v in zip(pos, values):
        if v:
            jitter = np.linspace(-0.12, 0.12, len(v)) if len(v) > 1 else [0.0]
            ax.scatter(p + np.asarray(jitter), v, s=10, color="0.5", zorder=3)
    means = [r["mean"] for r in ranked]
    stds = [r["std"] for r in ranked]
    ax.errorbar(pos + 0.3, means, yerr=stds, fmt="o", color="C3", capsize=4, label="mean ± std")
    ax.set_xticks(pos)
    ax.set_xticklabels(order, rotation=20, ha="right")
    ax.set_ylabel(f"MAPE on {dataset_label}")
    ax.set_title(f"Stability on {dataset_label} (ranked by {rule})", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return to_svg(fig, salt=salt)


def write_study(out_dir: Path, plan: Plan, store, ctx: Context, meta: dict) -> dict:
    """study_runs.csv, study.csv (ranked), study.svg, study.json and report.html (the sections of
    ``ctx.registry``, among them the stability study's)."""
    runs = collect(plan, store, ctx)
    per = {c: [x["mape"] for x in runs if x["candidate"] == c] for c in dict.fromkeys(x["candidate"] for x in runs)}
    ranked = rank(per, meta["rule"])
    study = dict(meta, ranked=ranked, runs=runs, repeats_vary=REPEATS_VARY)
    with open(out_dir / "study_runs.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(runs[0]) if runs else ["candidate"])
        w.writeheader()
        w.writerows(runs)
    with open(out_dir / "study.csv", "w", newline="") as fh:
        cols = ["rank", "candidate", "n", "mean", "std", "worst", "best", "median", "cv", "score"]
        w = csv.DictWriter(fh, fieldnames=cols + ["rule"], extrasaction="ignore")
        w.writeheader()
        for r in ranked:
            w.writerow(dict(r, rule=meta["rule"]))
    svg = plot_svg(runs, ranked, meta["dataset_label"], meta["rule"], salt=f"study:{out_dir}")
    (out_dir / "study.svg").write_text(svg)
    (out_dir / "study.json").write_text(json.dumps(study, indent=1, default=str))
    # the run directory's report.html: the study section (with provenance); merge it into a Table I report
    # with `paraisite-bench report RUN_DIR SELECT_DIR --out report.html`
    rewrite_outputs([out_dir], ordered_sections(ctx.registry))
    return study


def run_select(*, candidates, dataset, repeats, epochs, pretrain_epochs, pretrain_batch_size, stage_epochs,
               subsample, rule, seed,
               selection, out, data_dir, cache_dir, workers, threads, plugin_modules, progress, registry_loader,
               echo, report_only: bool = False) -> dict:
    """The ``select`` command: plan, execute (resumable), write the study outputs, print the ranking."""
    import dataclasses
    import datetime as dt
    import time

    from .compilation import compile_mode
    from .data import resolve_data_dir
    from .outputs import file_log, writable_run_dir
    from .protocol import PRESETS
    from .runner import execute
    from .store import Store

    parse_rule(rule)
    names = [c.strip() for c in candidates.split(",") if c.strip()]
    if not names:
        raise UserError("--candidates is empty: give BACKBONE:SOURCE[,...], e.g. megnet:eform,crabnet:expt_gap")
    data_root = resolve_data_dir(data_dir)
    registry = registry_loader(plugin_modules)
    for name, err in registry.broken:
        echo(f"warning: plugin {name} is broken and was skipped: {err}", err=True)
    target = registry.dataset(dataset).name
    protocol = PRESETS["paper"]["protocol"]
    overrides = {k: v for k, v in dict(epochs=epochs, seed=seed, selection=selection).items() if v is not None}
    if selection == "heldout":
        overrides["scaler_fit"] = "train"
    protocol = dataclasses.replace(protocol, splits=repeats, **overrides)
    ctx = Context(registry, data_root, protocol, Path(cache_dir) if cache_dir else None)
    parsed = [parse_candidate(ctx, n) for n in dict.fromkeys(names)]
    pre = {s.dataset for c in parsed for s in c.stages if s.dataset != TARGET}
    per_stage = dict(stage_epochs or ())
    if pretrain_epochs:
        per_stage = {**{d: pretrain_epochs for d in pre}, **per_stage}
    for name in list(per_stage) + [n for n, _ in (subsample or ())]:
        registry.get("dataset", name)
    batches = {d: pretrain_batch_size for d in pre} if pretrain_batch_size else {}
    protocol = dataclasses.replace(protocol, stage_epochs=tuple(sorted(per_stage.items())),
                                   stage_batch_size=tuple(sorted(batches.items())),
                                   subsample=tuple(subsample or ()))
    ctx = Context(registry, data_root, protocol, Path(cache_dir) if cache_dir else None)
    plan = build_study_plan(ctx, parsed, target, repeats)
    out_dir = writable_run_dir(out)
    notes = composition_notes(ctx, [c.backbone for c in parsed], [target])
    for n in notes:
        echo(f"warning: {n}", err=True)
    store = Store(out_dir / "store.sqlite")
    log = file_log(out_dir / "select.log")

    meta = {"command": " ".join(["paraisite-bench", *sys.argv[1:]]), "dataset": target, "dataset_label": registry.dataset(target).label, "repeats": repeats,
            "rule": rule, "epochs": protocol.epochs, "stage_epochs": dict(protocol.stage_epochs),
            "stage_batch_size": dict(protocol.stage_batch_size),
            "subsample": dict(protocol.subsample), "selection": protocol.selection,
            "candidates": {c.name: {"backbone": c.backbone, "description": c.description,
                                    "settings": ctx.backbone(c.backbone).settings()} for c in parsed},
            "protocol": protocol.to_dict(), "notes": notes, "workers": workers, "threads": threads,
            "compile": compile_mode(),
            "started": dt.datetime.now().isoformat(timespec="seconds")}
    log(f"select: {len(plan.stages)} stages, {len(plan.cells)} candidate × repeat cells")
    t0 = time.time()
    outcome = None
    try:
        if report_only:  # the study outputs from what the store holds (e.g. while a long run goes on)
            from .runner import RunOutcome

            outcome = RunOutcome(reused=sum(1 for k in plan.stages if store.done(k)))
            meta.pop("started")
        else:
            outcome = execute(plan, ctx, store, workers=workers, threads=threads, plugin_modules=plugin_modules,
                              progress=progress, log=log)
    finally:
        meta["wall_s"] = round(time.time() - t0, 1)
        meta["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        previous = out_dir / "study.json"
        if report_only and previous.exists():  # keep the timing and command of the run that trained
            try:
                old = json.loads(previous.read_text())
                meta.update({k: old[k] for k in ("command", "started", "finished", "wall_s") if k in old})
            except (ValueError, OSError):
                pass
        study = write_study(out_dir, plan, store, ctx, meta)
        store.close()
    echo(f"\nparaisite-bench select: {outcome.trained} stages trained, {outcome.reused} reused, "
         f"{len(outcome.failed)} failed, {outcome.wall_s:.0f} s")
    echo(f"  {study['dataset_label']}, {repeats} repeats ({REPEATS_VARY}); rule: lowest {rule}")
    width = max([len(r["candidate"]) for r in study["ranked"]] + [9]) + 2
    echo("  rank  " + "candidate".ljust(width) + "mean     std      worst    CV     score    n")
    for r in study["ranked"]:
        echo(f"  {r['rank']:<5} {r['candidate']:<{width}}{r['mean']:<9.3f}{r['std']:<9.3f}{r['worst']:<9.3f}"
             f"{r['cv']:<7.2f}{r['score']:.3f}")
    for label, err in outcome.failed[:5]:
        echo(f"  FAILED {label}: {err}")
    echo(f"  table: {out_dir / 'study.csv'}  plot: {out_dir / 'study.svg'}  runs: {out_dir / 'study_runs.csv'}")
    if outcome.interrupted:
        raise UserError(f"interrupted: finished stages are stored in {out_dir}; run the same command to resume")
    if outcome.failed:
        raise SystemExit(1)
    return study
