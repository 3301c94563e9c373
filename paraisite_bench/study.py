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
import math
import re
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from .context import Context
from .errors import UserError
from .jobs import Cell, Plan, add_stage, check_splits, input_mismatch, resolved_init
from .leakage import decontamination
from .orchestrate import Command, Launch, RunDir, command_line, echo_failures, protocol_with, warn
from .outputs import rewrite_outputs, write_failures
from .plugins import Registry
from .protocol import (
    PRESETS,
    Protocol,
    StageOptions,
    merged_stage_options,
    stage_options_of,
    with_training_seed,
)
from .report import ordered_sections
from .results import stage_rows
from .runner import RunOutcome
from .strategy import TARGET, Init, Stage
from .train import removed_ids

#: What the repeats vary, said wherever the study's numbers are shown.
REPEATS_VARY = ("repeat r = split r of the target (identical for every candidate) and training seed "
                "seed + r; each candidate's pretraining stage is trained once (split 0) and shared, "
                "without the target's records (or once per repeat when it holds them)")


@dataclass(frozen=True)
class Candidate:
    """``<backbone>:<source>``: a backbone and where its weights come from before the target."""

    name: str
    backbone: str
    stages: tuple[Stage, ...]
    description: str
    #: the registered strategy it follows, if any (its plugin's identity is part of the stage keys)
    strategy: str = ""


def parse_candidate(reg: Registry, text: str) -> Candidate:
    """``megnet:eform`` (published weights), ``megnet:bandgap`` (the backbone ``megnet_bandgap`` and
    its default weights), ``crabnet:expt_gap`` (random → pretraining dataset → target),
    ``<backbone>:scratch``, or ``<backbone>:<strategy>`` for any registered strategy."""
    name = text.strip().lower()
    backbone, sep, source = name.partition(":")
    if not sep or not backbone or not source:
        raise UserError(f"candidate {text!r}: expected BACKBONE:SOURCE, "
                        "e.g. megnet:eform or crabnet:expt_gap")
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
        return Candidate(name, bb.name, (Stage(Init.random(), TARGET),),
                         f"{bb.name}, random weights → target")
    if source in reg.datasets:
        label = reg.dataset(source).label
        return Candidate(name, bb.name, (Stage(Init.random(), source), Stage(Init.previous(), TARGET)),
                         f"{bb.name}, random weights → {label} → target")
    if source in reg.strategies:
        st = reg.strategy(source)
        return Candidate(name, bb.name, st.stages, f"{bb.name}, {st.description}", st.name)
    raise UserError(f"candidate {text!r}: {source!r} is neither a published-weights source of {bb.name} "
                    f"({', '.join(bb.weight_sources) or 'none'}), nor a dataset, nor a strategy "
                    "(see `paraisite-bench plugins`)")


def _pretraining(ctx: Context, dataset: str, target: str, options: dict, r: int) -> tuple[dict, int]:
    """(options, split) of a candidate's pretraining stage for repeat r. It is shared by every repeat (trained
    on split 0) so that repeats cost one target stage each — unless it could see a repeat's test records:
    a pretraining dataset that holds the target's own records (the target or a union with it) is keyed per
    repeat (split r, whose training part excludes repeat r's test part); any other pretraining dataset leaves
    out the records matching the target (``--decontaminate`` rule, structure by default), which keeps it
    shared and never trained on a record of any repeat's test part."""
    if set(ctx.atomic_names(dataset)) & set(ctx.atomic_names(target)):
        return options, r
    deco = decontamination(ctx, dataset, [target], ctx.protocol.decontaminate
                           if ctx.protocol.decontaminate != "off" else "structure")
    if deco and removed_ids(ctx, dataset, {"decontaminate": deco}):
        options = dict(options, decontaminate=deco)
    return options, 0


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
        chain = [Stage(s.init, target if s.dataset == TARGET else reg.dataset(s.dataset).name)
                 for s in cand.stages]
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
                init = resolved_init(bb, st.init)
                options = protocol.training_options(st.dataset)
                split = r if last else 0
                if last:  # repeat r: training seed seed + r on split r made with the protocol's seed
                    options = with_training_seed(options, protocol.seed + r)
                else:
                    options, split = _pretraining(ctx, st.dataset, target, options, r)
                labels.append(f"{init}>{st.dataset}" if not labels else st.dataset)
                parent = add_stage(plan, ctx, bb, init, parent, st.dataset, split, options,
                                   f"{cand.name}:{'>'.join(labels)}#{split}", cand.strategy or None)
            plan.evals.setdefault(parent, [target])
            plan.metrics[target] = ctx.registry.dataset(target).target.kind.metric_names
            plan.cells.append(Cell(bb.name, cand.name, target, target, r, parent, ">".join(labels),
                                   protocol.seed + r))
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
    from pymatgen.core import Composition  # ~1 s to import: only when a composition backbone runs

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
                groups.setdefault(key, []).append(rec.value)
            dup = {f: v for f, v in groups.items() if len(v) > 1 and len(set(v)) > 1}
            if dup:
                examples = ", ".join(f"{f} ({' vs '.join(f'{x:.3g}' for x in v)})"
                                     for f, v in list(dup.items())[:3])
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
        ev = store.evals(cell.stage_key).get(cell.test, {}).get(ctx.protocol.selection)
        st = store.stage(cell.stage_key)
        spec = plan.stages[cell.stage_key]
        rows.append({"candidate": cell.strategy, "backbone": cell.backbone, "repeat": cell.split,
                     "split": spec.split, "seed": spec.options["seed"], "dataset": cell.test,
                     "mape": ev["metrics"]["mape"] if ev else None, "n_test": ev["n_test"] if ev else None,
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
    candidates = dict.fromkeys(x["candidate"] for x in runs)
    per = {c: [x["mape"] for x in runs if x["candidate"] == c] for c in candidates}
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


@dataclass
class StabilityStudy(Command):
    """The ``select`` command: plan every candidate × repeat, execute (resumable), write the study outputs
    and print the ranking. ``report_only``: the outputs from what the store holds, no training."""

    candidates: tuple[str, ...]
    dataset: str = "dataset1"
    repeats: int = 9
    rule: str = "mean+1*std"
    epochs: int | None = None
    pretrain_epochs: int | None = None
    pretrain_batch_size: int | None = None
    #: per-dataset stage options given on the command line (``--stage-epochs``)
    stage_options: StageOptions = ()
    subsample: tuple[tuple[str, int], ...] = ()
    seed: int | None = None
    selection: str | None = None
    report_only: bool = False
    split_by: str | None = None
    #: how pretraining stages leave out the target's records (None: structure; see build_study_plan)
    decontaminate: str | None = None
    log_name = "select.log"

    def __post_init__(self):
        parse_rule(self.rule)
        self.candidates = tuple(dict.fromkeys(c.strip() for c in self.candidates if c.strip()))
        if not self.candidates:
            raise UserError("--candidates is empty: give BACKBONE:SOURCE[,...], "
                            "e.g. megnet:eform,crabnet:expt_gap")
        self.target = self.dataset
        self.parsed: list[Candidate] = []
        self.notes: list[str] = []
        self.meta: dict = {}

    def plan(self, launch: Launch) -> tuple[Context, Plan]:
        registry = launch.registry
        self.target = registry.dataset(self.dataset).name
        self.parsed = [parse_candidate(registry, c) for c in self.candidates]
        ctx = launch.context(self._protocol())
        plan = build_study_plan(ctx, self.parsed, self.target, self.repeats)
        check_splits(ctx, plan)
        self.notes = composition_notes(ctx, [c.backbone for c in self.parsed], [self.target])
        for note in self.notes:
            warn(note)
        return ctx, plan

    def _protocol(self) -> Protocol:
        """The paper's protocol with one split per repeat; pretraining stages get their own epochs and
        batch size."""
        pre = {s.dataset for c in self.parsed for s in c.stages if s.dataset != TARGET}
        pretraining = {"epochs": self.pretrain_epochs, "batch_size": self.pretrain_batch_size}
        pretraining = {k: v for k, v in pretraining.items() if v}
        stage_options = merged_stage_options(stage_options_of({d: pretraining for d in pre}),
                                             self.stage_options)
        return protocol_with(PRESETS["paper"]["protocol"], splits=self.repeats, epochs=self.epochs,
                             seed=self.seed, selection=self.selection, split_by=self.split_by,
                             decontaminate=self.decontaminate, stage_options=stage_options,
                             subsample=tuple(self.subsample))

    def start(self, run: RunDir) -> None:
        protocol, ctx = run.ctx.protocol, run.ctx
        self.meta = {
            "command": command_line(), "dataset": self.target,
            "dataset_label": ctx.registry.dataset(self.target).label, "repeats": self.repeats,
            "rule": self.rule, "epochs": protocol.epochs,
            "stage_epochs": {d: dict(o)["epochs"] for d, o in protocol.stage_options if "epochs" in dict(o)},
            "stage_batch_size": {d: dict(o)["batch_size"] for d, o in protocol.stage_options
                                 if "batch_size" in dict(o)},
            "subsample": dict(protocol.subsample), "selection": protocol.selection,
            "candidates": {c.name: {"backbone": c.backbone, "description": c.description,
                                    "settings": ctx.backbone(c.backbone).settings()} for c in self.parsed},
            "protocol": protocol.to_dict(), "notes": self.notes, "workers": run.launch.options.workers,
            "threads": run.launch.options.threads, "compile": run.launch.compile_mode, "started": run.started}
        run.log(f"select: {len(run.plan.stages)} stages, {len(run.plan.cells)} candidate × repeat cells")

    def execute(self, run: RunDir) -> RunOutcome:
        if not self.report_only:
            return super().execute(run)
        self.meta.pop("started")
        return RunOutcome(reused=sum(1 for k in run.plan.stages if run.store.done(k)))

    def finish(self, run: RunDir, outcome: RunOutcome | None) -> dict:
        self.meta.update(wall_s=run.wall_s, finished=run.finished)
        previous = run.path / "study.json"
        if self.report_only and previous.exists():  # keep the timing and command of the run that trained
            try:
                old = json.loads(previous.read_text())
                kept = ("command", "started", "finished", "wall_s")
                self.meta.update({k: old[k] for k in kept if k in old})
            except (ValueError, OSError):
                pass
        write_failures(run.path, stage_rows(list(run.plan.stages), run.store))
        return write_study(run.path, run.plan, run.store, run.ctx, self.meta)

    def summary(self, run: RunDir, outcome: RunOutcome, study: dict) -> None:
        echo = click.echo
        echo(f"\nparaisite-bench select: {outcome.trained} stages trained, {outcome.reused} reused, "
             f"{len(outcome.failed)} failed, {outcome.wall_s:.0f} s")
        echo(f"  {study['dataset_label']}, {self.repeats} repeats ({REPEATS_VARY}); rule: lowest {self.rule}")
        width = max([len(r["candidate"]) for r in study["ranked"]] + [9]) + 2
        echo("  rank  " + "candidate".ljust(width) + "mean     std      worst    CV     score    n")
        for r in study["ranked"]:
            echo(f"  {r['rank']:<5} {r['candidate']:<{width}}{r['mean']:<9.3f}{r['std']:<9.3f}"
                 f"{r['worst']:<9.3f}{r['cv']:<7.2f}{r['score']:.3f}")
        echo_failures(run.path, outcome)
        out_dir = run.path
        echo(f"  table: {out_dir / 'study.csv'}  plot: {out_dir / 'study.svg'}  "
             f"runs: {out_dir / 'study_runs.csv'}")
