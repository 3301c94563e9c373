"""The ``paraisite-bench`` command line."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click

from .baselines import plan_baselines, planned_baselines
from .bundle import load_bundle, modelset_from_run, read_run, save_bundle
from .compilation import COMPILE_MODES
from .context import Context
from .data import resolve_data_dir
from .errors import UserError
from .estimate import Resources, cached_estimate, echo_dry_run
from .executors import DEVICES
from .jobs import Plan, build_plan, check_splits, starting_point
from .leakage import DECONTAMINATE_MODES, DECONTAMINATED_FIELDS, audit_cells, decontaminated_rows
from .orchestrate import (
    Command,
    Launch,
    LaunchOptions,
    RunDir,
    command_line,
    echo_failures,
    load_plugins,
    prepare,
    protocol_with,
    run_command,
    skipped_rows,
    stages_from_cache,
    warn,
    write_outputs,
)
from .outputs import machine_info, rewrite_outputs, write_csv
from .overlap import split_fractions
from .parts import parse_splits, splits_text
from .plugins import KINDS, plugin_distributions
from .predict import cell_label, read_inputs, screen, summary_lines, use_threads, write_prediction_files
from .protocol import (
    PRESETS,
    SELECTION_MODES,
    SPLIT_MODES,
    STAGE_OPTION_TYPES,
    Protocol,
    SplitOptions,
    StageOptions,
    merged_stage_options,
    stage_options_of,
)
from .report import ordered_sections
from .results import BASELINE, table_mean, table_std
from .runner import RunOutcome
from .study import StabilityStudy, composition_notes
from .userdata import add_datasets, check_inputs, dataset_specs


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = tuple(dict.fromkeys(v.strip().lower() for v in value.split(",") if v.strip()))
    if not names:
        raise UserError("empty list of names: give comma-separated names, e.g. dataset1,mix")
    return names


def _pairs(value: str | None, option: str) -> tuple[tuple[str, int], ...] | None:
    if value is None:
        return None
    out = []
    for item in value.split(","):
        name, _, n = item.partition("=")
        try:
            out.append((name.strip().lower(), int(n)))
        except ValueError:
            raise UserError(f"{option} {value!r}: expected NAME=INTEGER[,NAME=INTEGER...], "
                            "e.g. aflow=400") from None
        if out[-1][1] < 1:
            raise UserError(f"{option} {value!r}: the number must be ≥ 1")
    return tuple(out)


def _stage_option(value: str, item: str) -> tuple[str, object]:
    """One ``OPTION=VALUE`` of ``--stage-options``, typed by :data:`STAGE_OPTION_TYPES`."""
    name, _, raw = (part.strip() for part in item.partition("="))
    kind = STAGE_OPTION_TYPES.get(name.lower())
    try:
        if kind is None or not raw:
            raise ValueError
        return name.lower(), kind(raw)
    except ValueError:
        known = ", ".join(f"{k}={t.__name__}" for k, t in STAGE_OPTION_TYPES.items())
        raise UserError(f"--stage-options {value!r}: {item!r} is not OPTION=VALUE with OPTION one of {known} "
                        "(e.g. expt_gap:lr=3e-4,recipe=crabnet)") from None


def _stage_options(values: tuple[str, ...], stage_epochs: str | None) -> StageOptions:
    """``--stage-epochs NAME=N,...`` and ``--stage-options DATASET:OPTION=VALUE,...`` (repeatable) as
    per-dataset stage options; ``--stage-options`` wins where both set a dataset's epochs."""
    layers = [stage_options_of({d: {"epochs": n} for d, n in (_pairs(stage_epochs, "--stage-epochs") or ())})]
    for value in values:
        dataset, _, items = (part.strip() for part in value.partition(":"))
        options = dict(_stage_option(value, item) for item in items.split(",") if item.strip())
        if not dataset or not options:
            raise UserError(f"--stage-options {value!r}: expected DATASET:OPTION=VALUE[,...], "
                            "e.g. aflow:epochs=20,lr=3e-4")
        layers.append(stage_options_of({dataset.lower(): options}))
    return merged_stage_options(*layers)


def _backbone_datasets(value: str | None) -> tuple[tuple[str, str], ...] | None:
    """``--pretraining BACKBONE=DATASET[,...]``."""
    if value is None:
        return None
    out = []
    for item in value.split(","):
        backbone, _, dataset = item.partition("=")
        if not backbone.strip() or not dataset.strip():
            raise UserError(f"--pretraining {value!r}: expected BACKBONE=DATASET[,...], "
                            "e.g. crabnet=expt_gap")
        out.append((backbone.strip().lower(), dataset.strip().lower()))
    return tuple(out)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("paraisite-bench", "torch", "matgl", "torch-geometric", "pymatgen-core", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="paraisite-bench")
def cli():
    """Benchmark transfer learning for lattice-thermal-conductivity prediction (ParAIsite protocol)."""


@cli.command()
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
def plugins(plugin_modules):
    """List every backbone, dataset, strategy, training recipe, executor, report section and baseline, and
    which plugin provides it."""
    reg = load_plugins(plugin_modules)
    w = max(12, *(len(n) for kind in KINDS for n in reg.table(kind)))
    click.echo("backbones:")
    for name, cls in sorted(reg.backbones.items()):
        pretraining = cls.default_pretraining
        weights = ", ".join(cls.weight_sources) or (
            f"none (Steps 2-3 pretrain on {pretraining.dataset})" if pretraining else "none")
        click.echo(f"  {name:{w}s} [{reg.providers[('backbone', name)]}] {cls.input_kind} input, "
                   f"{cls.representation_dim}-d representation; published weights: {weights}. "
                   f"{cls.description}")
    click.echo("datasets:")
    for name, spec in sorted(reg.datasets.items()):
        extra = f" (= {' ∪ '.join(spec.components)})" if spec.components else ""
        click.echo(f"  {name:{w}s} [{spec.plugin}] {spec.description}{extra}")
    click.echo("strategies:")
    for name, st in sorted(reg.strategies.items()):
        chain = " → ".join(f"{s.init}>{s.dataset}" if i == 0 else s.dataset for i, s in enumerate(st.stages))
        click.echo(f"  {name:{w}s} [{st.plugin}] {chain}. {st.description}")
    click.echo("training recipes (--stage-options DATASET:recipe=NAME; none: Adam with a cosine schedule):")
    for name, cls in sorted(reg.recipes.items()):
        click.echo(f"  {name:{w}s} [{reg.providers[('recipe', name)]}] {cls.description}")
    click.echo("executors:")
    for name, cls in sorted(reg.executors.items()):
        click.echo(f"  {name:{w}s} [{reg.providers[('executor', name)]}] {cls.description}")
    click.echo("report sections (in page order):")
    for sec in ordered_sections(reg):
        click.echo(f"  {sec.name:{w}s} [{sec.plugin}] {sec.title}")
    click.echo("baselines:")
    for name, cls in sorted(reg.baselines.items()):
        click.echo(f"  {name:{w}s} [{reg.providers[('baseline', name)]}] {cls.needs} input. "
                   f"{cls.description}")
    if reg.broken:
        click.echo("broken plugins:")
        for name, err in reg.broken:
            click.echo(f"  {name}: {err}")


def _widths(value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(w) for w in value.split(","))
    except ValueError:
        raise UserError(f"--head {value!r}: expected comma-separated widths, e.g. 350,350,350") from None


def _lower(value: str | None) -> str | None:
    return value.lower() if value else None


@dataclass
class TableRun(Command):
    """``run``: every backbone × strategy × train × test cell (Table I), recorded in run.json."""

    preset: str
    protocol: Protocol
    backbones: tuple[str, ...]
    strategies: tuple[str, ...]
    train: tuple[str, ...]
    test: tuple[str, ...]
    #: baselines to compute (None: every registered one)
    baselines: tuple[str, ...] | None = None
    #: only these splits of the protocol (``--only-splits``: a part of the run, see :mod:`.parts`)
    only_splits: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)
    run_info: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    def plan(self, launch: Launch) -> tuple[Context, Plan]:
        launch.check_names("backbone", self.backbones)
        launch.check_names("strategy", self.strategies)
        launch.check_names("dataset", self.train + self.test)
        check_inputs(launch.registry, launch.datasets, self.backbones, self.train + self.test)
        ctx = launch.context(self.protocol)
        plan = build_plan(ctx, self.backbones, self.strategies, self.train, self.test, self.only_splits)
        everything = sorted(launch.registry.baselines)
        plan_baselines(ctx, plan, everything if self.baselines is None else self.baselines)
        for b, s, reason in plan.skipped:
            warn(f"{b} × {s} skipped: {reason}")
        self.notes = composition_notes(ctx, self.backbones, self.train + self.test)  # kept in run.json
        for note in self.notes:
            warn(note)
        if not plan.stages:
            raise UserError("nothing to run: every backbone × strategy combination was skipped")
        check_splits(ctx, plan)
        return ctx, plan

    def start(self, run: RunDir) -> None:
        self.run_info = self._info(run)
        (run.path / "run.json").write_text(json.dumps(self.run_info, indent=1))
        removed = decontaminated_rows(run.ctx, run.plan.stages.values())
        if removed:
            write_csv(run.path / "decontaminated.csv", DECONTAMINATED_FIELDS, removed)
        run.log(f"start: {self.run_info['command']}")

    def _info(self, run: RunDir) -> dict:
        options, ctx, plan, registry = run.launch.options, run.ctx, run.plan, run.launch.registry
        used = sorted({s.dataset for s in plan.stages.values()} | set(self.test))
        return {
            "out": str(run.path), "preset": self.preset, "command": command_line(),
            "backbones": list(self.backbones), "strategies": list(self.strategies), "train": list(self.train),
            "test": list(self.test), "protocol": self.protocol.to_dict(),
            "data_dir": str(run.launch.data_dir),
            "started": run.started, "finished": None, "versions": _versions(), "machine": platform.machine(),
            "workers": options.workers, "threads": options.threads, "host": machine_info(),
            "executor": run.launch.executor, "address": options.address, "device": run.launch.device,
            "early_stop": self.protocol.early_stop or None, "compile": run.launch.compile_mode,
            "cells": [dataclasses.asdict(c) for c in plan.cells], "stages": list(plan.stages),
            "stage_parents": {k: s.parent for k, s in plan.stages.items() if s.parent},
            "only_splits": list(self.only_splits) if self.only_splits is not None else None,
            **({"note": f"part of a run: splits {splits_text(self.only_splits)} of {self.protocol.splits}"}
               if self.only_splits is not None else {}),
            "estimate_s": cached_estimate(ctx, plan, run.store, run.launch),
            "baselines": list(plan.baselines),
            "baseline_keys": [key for _name, _cell, key in planned_baselines(ctx, plan)],
            "labels": {n: registry.dataset(n).label for n in dict.fromkeys(self.train + self.test)},
            "strategy_descriptions": {s: registry.strategy(s).description for s in self.strategies},
            "starting_points": {b: starting_point(ctx, ctx.backbone(b)) for b in self.backbones},
            "data": {n: ctx.dataset(n).fingerprint for n in used},
            "test_fractions": {n: [round(f, 4) for f in split_fractions(ctx, n, SplitOptions.of(
                self.protocol.training_options(n)))] for n in used},
            "notes": self.notes, "plugins": plugin_distributions(registry),
        }

    def finish(self, run: RunDir, outcome: RunOutcome | None) -> dict:
        # the leakage audit needs the features (what each stage could train on): done once they exist
        self.run_info.update(finished=run.finished, wall_s=run.wall_s, cells=audit_cells(run.ctx, run.plan),
                             stages_from_cache=stages_from_cache(run))
        (run.path / "run.json").write_text(json.dumps(self.run_info, indent=1))
        self.skipped = skipped_rows(run.ctx, run.plan)
        return write_outputs(run, self.run_info, self.skipped)

    def summary(self, run: RunDir, outcome: RunOutcome, result: dict) -> None:
        _summary(run.path, outcome, result, self.skipped, run.plan, self.run_info)


#: --dry-run, the same on `run` and `select`
dry_run_option = click.option(
    "--dry-run", is_flag=True,
    help="Print the plan (stages to train, stages reused from the run's store or the stage cache, "
         "evaluations) and an estimated wall time for --workers/--threads/--device from rates this machine "
         "measures (a few real training steps, kept under --cache-dir); train nothing, write no run "
         "directory.")

#: --split-by and --decontaminate, the same on `run` and `select`
split_by_option = click.option(
    "--split-by", type=click.Choice(sorted(SPLIT_MODES), case_sensitive=False), default=None,
    help="Which records stay on the same side of a split: random (the paper: none), formula (same reduced "
         "formula), chemsys (same elements) or prototype (same structure type) [default: random].")
decontaminate_option = click.option(
    "--decontaminate", type=click.Choice(sorted(DECONTAMINATE_MODES), case_sensitive=False), default=None,
    help="Pretraining stages (e.g. AFLOW in double) leave out records whose formula or structure is in a "
         "train or test dataset of the run [default: off, the paper; select: structure].")


@cli.command()
@click.option("--preset", type=click.Choice(sorted(PRESETS), case_sensitive=False), default="paper",
              show_default=True, help="Protocol defaults; explicit options override them.")
@click.option("--backbones", help="Comma-separated backbone names.")
@click.option("--strategies", help="Comma-separated strategy names.")
@click.option("--train", help="Comma-separated training datasets.")
@click.option("--test", help="Comma-separated test datasets.")
@click.option("--splits", type=click.IntRange(1), help="Number of random 80/20 splits (paper: 9).")
@click.option("--epochs", type=click.IntRange(1), help="Epochs per stage (paper: 300).")
@click.option("--stage-epochs", help="Epochs for stages on given datasets, e.g. aflow=20.")
@click.option("--stage-options", "stage_options", multiple=True, metavar="DATASET:OPTION=VALUE,...",
              help="Options of stages on a dataset: epochs, batch_size, lr, cosine_tmax, recipe (a "
                   "registered training recipe, see `paraisite-bench plugins`), "
                   "e.g. mp_e_form:epochs=10,recipe=crabnet.")
@click.option("--pretraining", metavar="BACKBONE=DATASET,...",
              help="What stands in for published weights in pretrained/double for a backbone that has none "
                   "(default: the backbone's own choice, e.g. crabnet=mp_e_form).")
@click.option("--subsample", help="Cap records of a dataset (deterministic), e.g. aflow=400.")
@click.option("--batch-size", type=click.IntRange(1))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True))
@click.option("--seed", type=int)
@click.option("--selection", type=click.Choice(sorted(SELECTION_MODES), case_sensitive=False),
              help="paper: select the epoch on the 20 percent test part; heldout: on an inner part of "
                   "the 80 percent; last: no selection, the final epoch (paper runs report it too).")
@click.option("--seeds", type=click.IntRange(1),
              help="Training seeds per split (default 1): the report separates split from seed variance.")
@click.option("--scaler-fit", type=click.Choice(["all", "train"], case_sensitive=False),
              help="Fit the label scaler on all records (original code) or on training records only.")
@click.option("--cosine-tmax", type=click.IntRange(0),
              help="Cosine lr schedule T_max in epochs (0: constant).")
@click.option("--head", help="Widths of the ParAIsite head's dense layers, e.g. 350,350,350.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/latest", show_default=True,
              help="Run directory (results, store, report).")
@click.option("--data-dir", type=click.Path(),
              help="Data root with ltc/ and models/ (else $PARAISITE_BENCH_DATA).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Feature cache (else $PARAISITE_BENCH_CACHE or ~/.cache/paraisite-bench).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="Jobs run in parallel.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Torch threads per job.")
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
@click.option("--baselines", "baselines_", metavar="NAMES|none",
              help="Comma-separated baselines scored on every train × test × split, next to the trained "
                   "models, or none (see `paraisite-bench plugins`) [default: every registered one].")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: on a terminal).")
@click.option("--dataset-file", "dataset_files", multiple=True, metavar="[NAME=]PATH",
              help="Your own dataset for --train/--test: a CSV or JSON of id, kappa, cif (text or path) "
                   "and/or formula, or a folder of CIFs with a CSV of id,kappa. Name: the file's stem, "
                   "or NAME=.")
@click.option("--executor", metavar="NAME",
              help="Where jobs run (see `paraisite-bench plugins`): inline (this process), local (--workers "
                   "processes), ray (Ray tasks) [default: inline with --workers 1, else local].")
@click.option("--address", help="Cluster address, for executors that take one (ray; default: a private "
              "local instance).")
@click.option("--device", type=click.Choice(DEVICES, case_sensitive=False), default="auto",
              show_default=True, help="Where models run (auto: cuda if torch sees a GPU, else cpu).")
@click.option("--early-stop", type=click.IntRange(1), default=None,
              help="Stop a stage after N epochs without a better validation MAPE "
                   "(default: off, as the paper).")
@click.option("--stage-cache/--no-stage-cache", default=True, show_default=True,
              help="Take pretraining stages (those other stages build on) from the machine's stage cache "
                   "under --cache-dir when another run trained them, and put them there.")
@split_by_option
@decontaminate_option
@click.option("--compile", "compile_", type=click.Choice(COMPILE_MODES, case_sensitive=False), default=None,
              help="Let backbones compile their training step (torch.compile; same function, rounding "
                   "aside): auto = stages of at least 1,000 steps on CPU "
                   "[default: $PARAISITE_BENCH_COMPILE or auto].")
@click.option("--only-splits", metavar="SPLITS",
              help="Run only these splits of the protocol, e.g. 0-2 or 0,3,5-6 (a part of the run: the same "
                   "stages as the whole run; join the parts with `paraisite-bench report PART... --out`).")
@dry_run_option
def run(preset, backbones, strategies, train, test, splits, epochs, stage_epochs, subsample, batch_size, lr,
        seed, selection, scaler_fit, cosine_tmax, head, out, data_dir, cache_dir, workers, threads,
        plugin_modules, progress, executor, address, device, early_stop, compile_=None, dataset_files=(),
        seeds=None, split_by=None, decontaminate=None, baselines_=None, stage_cache=True, stage_options=(),
        pretraining=None, only_splits=None, dry_run=False):
    """Train and evaluate every backbone × strategy × train × test cell; resumable."""
    base = PRESETS[preset.lower()]
    protocol = protocol_with(
        base["protocol"], splits=splits, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
        selection=_lower(selection), scaler_fit=_lower(scaler_fit), cosine_tmax=cosine_tmax,
        subsample=_pairs(subsample, "--subsample"),
        stage_options=merged_stage_options(base["protocol"].stage_options,
                                           _stage_options(stage_options, stage_epochs)),
        pretraining=_backbone_datasets(pretraining),
        early_stop=early_stop, head=_widths(head), seeds=seeds, split_by=_lower(split_by),
        decontaminate=_lower(decontaminate))
    grid = TableRun(preset=preset.lower(), protocol=protocol,
                    backbones=_names(backbones) or base["backbones"],
                    strategies=_names(strategies) or base["strategies"],
                    train=_names(train) or base["train"], test=_names(test) or base["test"],
                    baselines=_baseline_names(baselines_),
                    only_splits=parse_splits(only_splits, protocol.splits) if only_splits else None)
    launch = LaunchOptions(
        out=out, data_dir=data_dir, cache_dir=cache_dir, plugin_modules=tuple(plugin_modules),
        dataset_files=tuple(dataset_files), workers=workers, threads=threads, stage_cache=stage_cache,
        executor=_lower(executor),
        address=address, device=device.lower(), compile_mode=_lower(compile_), progress=progress)
    if dry_run:
        _dry_run(grid, launch)
    else:
        run_command(grid, launch)


def _dry_run(command: Command, options: LaunchOptions) -> None:
    """Plan as the command would, print what it would do and its estimated wall time; write nothing under
    --out (rates are measured once per machine and kept under --cache-dir)."""
    launch = prepare(options)
    ctx, plan = command.plan(launch)
    echo_dry_run(ctx, plan, Path(options.out), Resources.of(launch))


def _baseline_names(value: str | None) -> tuple[str, ...] | None:
    """``--baselines``: None (every registered baseline), ``none`` (no baseline) or the names."""
    names = _names(value)
    return () if names == ("none",) else names


def _summary(out_dir, outcome, result, skipped, plan, run_info):
    table = result.table
    echo = click.echo
    echo("")
    echo(f"paraisite-bench: {outcome.trained} stages trained, {outcome.reused} reused, "
         f"{len(outcome.failed)} failed, {outcome.evaluated} evaluations, {outcome.wall_s:.0f} s")
    if outcome.from_cache:
        echo(f"  {outcome.from_cache} pretraining stage(s) taken from the stage cache "
             "(run.json: stages_from_cache)")
    protocol = run_info.get("protocol") or {}
    _part_and_estimate(run_info)
    if protocol.get("split_by", "random") != "random":
        fractions = run_info.get("test_fractions", {}).items()
        spread = "; ".join(f"{n} {min(f):.2f}–{max(f):.2f}" for n, f in fractions if f)
        echo(f"  splits grouped by {protocol['split_by']}: not the paper's random splits "
             f"(held-out fraction per split: {spread})")
    if outcome.baselines:
        echo(f"  {outcome.baselines} baseline results computed ({', '.join(plan.baselines)}; in the store)")
    if run_info.get("early_stop"):
        echo(f"  early stopping was ON (patience {run_info['early_stop']} epochs): not the paper's protocol")
    by = {}
    headline = protocol.get("selection", "paper")
    # the protocol's selection mode; the others (e.g. `last`) are in table1.csv and the report
    for r in table:
        if r["selection"] == headline:
            by.setdefault((r["backbone"], r["strategy"], r["selection"]), []).append(r)
    tests = run_info["test"]
    order = {name: i for i, name in enumerate(run_info["strategies"])}
    wt = max(len("train \\ test"), *(len(t) for t in run_info["train"])) + 2
    wc = {te: max(22, len(te) + 2) for te in tests}
    for (b, s, sel), rows in sorted(by.items(), key=lambda kv: (kv[0][0] == BASELINE, kv[0][0],
                                                                order.get(kv[0][1], 99), kv[0][1])):
        echo(f"  {b} / {s} ({sel}) — MAPE mean (std); paper in [ ]")
        echo("    " + "train \\ test".ljust(wt) + "".join(t.ljust(wc[t]) for t in tests))
        for tr in run_info["train"]:
            cells = {r["test"]: r for r in rows if r["train"] == tr}
            if not cells:
                continue
            line = "    " + tr.ljust(wt)
            for te in tests:
                c = cells.get(te)
                txt = f"{table_mean(c):.2f} ({table_std(c):.2f})" if c else "—"
                if c and c["paper_mean"] != "":
                    txt += f" [{c['paper_mean']:.2f}]"
                line += txt.ljust(wc[te])
            echo(line)
    _leakage(run_info)
    if skipped:
        echo(f"  {len(skipped)} record(s) skipped (see {out_dir / 'skipped.csv'}), e.g.:")
        for s in skipped[:3]:
            where = f"{s['dataset']}: record {s['id']!r}" if s["dataset"] else f"{s['id']}"
            echo(f"    {where}: {s['problem']}" + (f" — {s['hint']}" if s.get("hint") else ""))
    _failures(out_dir, outcome, result)
    echo(f"  results: {out_dir / 'results.csv'}  table: {out_dir / 'table1.csv'}  "
         f"report: {out_dir / 'report.html'}")


def _part_and_estimate(run_info: dict) -> None:
    """Which splits a part of a run holds (``--only-splits``), and the wall time estimated at its start."""
    if run_info.get("only_splits") is not None:
        click.echo(f"  this run holds splits {splits_text(run_info['only_splits'])} of "
                   f"{run_info['protocol']['splits']} (--only-splits): join its parts with "
                   "`paraisite-bench report PART... --out DIR/report.html`")
    if run_info.get("estimate_s"):
        click.echo(f"  wall time {run_info.get('wall_s') or 0:.0f} s, estimated before the start: "
                   f"{run_info['estimate_s']:.0f} s (run.json: wall_s, estimate_s; from this machine's "
                   "rates, see run --dry-run)")


def _leakage(run_info: dict) -> None:
    """One line when test records were seen in training (the leakage audit of run.json's cells)."""
    cells = [c for c in run_info.get("cells", []) if c.get("leak_formula") is not None]
    leaky = [c for c in cells if c["leak_formula"] or c["leak_structure"]]
    if not leaky:
        return
    formula = sum(c["leak_formula"] for c in leaky) / len(leaky)
    structure = sum(c["leak_structure"] for c in leaky) / len(leaky)
    click.echo(f"  LEAKAGE: in {len(leaky)} of {len(cells)} results some test records were seen in training "
               f"(on average {formula:.1f} by formula, {structure:.1f} by structure; columns leak_* of "
               "results.csv; --preset strict groups splits by formula and decontaminates pretraining)")


def _failures(out_dir, outcome, result) -> None:
    """Each failed plugin once, the failed jobs (the first SHOW_FAILED, then how many more), what is
    missing: the same counts as failures.csv and the report."""
    echo = click.echo
    echo_failures(out_dir, outcome)
    if result.missing:
        # a planned result is a cell and split of a trained model (read once or more; baselines aside)
        present = len({(r["backbone"], r["strategy"], r["train"], r["test"], int(r["split"]))
                       for r in result.rows if r["backbone"] != BASELINE})
        planned = present + len(result.missing)
        echo(f"  {present} of {planned} planned results present, {len(result.missing)} missing "
             "(see the report's provenance); run the same command again to resume")


@cli.command()
@click.option("--candidates", required=True,
              help="Comma-separated BACKBONE:SOURCE, e.g. megnet:eform,megnet:bandgap,crabnet:expt_gap "
                   "(SOURCE: published weights, a pretraining dataset, scratch, or a strategy).")
@click.option("--dataset", default="dataset1", show_default=True, help="Target dataset.")
@click.option("--repeats", type=click.IntRange(1), default=9, show_default=True,
              help="Repeats per candidate: repeat r uses split r and training seed seed+r.")
@click.option("--epochs", type=click.IntRange(1), help="Epochs on the target (paper: 300).")
@click.option("--pretrain-epochs", type=click.IntRange(1),
              help="Epochs of pretraining stages (default: --epochs).")
@click.option("--pretrain-batch-size", type=click.IntRange(1), default=256, show_default=True,
              help="Batch size of pretraining stages (CrabNet's own choice for 4-10 k formulas; the target "
                   "stages keep the protocol's 8).")
@click.option("--stage-epochs", help="Epochs for stages on given datasets, e.g. expt_gap=100.")
@click.option("--stage-options", "stage_options", multiple=True, metavar="DATASET:OPTION=VALUE,...",
              help="As for run, e.g. expt_gap:recipe=crabnet (over --pretrain-epochs/--pretrain-batch-size).")
@click.option("--subsample",
              help="Cap records of a dataset (deterministic), e.g. elasticity_log10_kvrh=3000.")
@click.option("--rule", default="mean+1*std", show_default=True,
              help="Selection rule, lowest wins: mean|median|worst [+ K*std].")
@click.option("--seed", type=int)
@click.option("--selection", type=click.Choice(sorted(SELECTION_MODES), case_sensitive=False))
@click.option("--out", type=click.Path(file_okay=False), default="runs/select", show_default=True)
@click.option("--data-dir", type=click.Path())
@click.option("--cache-dir", type=click.Path(file_okay=False))
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True)
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
@click.option("--progress/--no-progress", default=None)
@click.option("--report", "report_only", is_flag=True,
              help="Only rewrite the study outputs from the store (no training), e.g. while a run goes on.")
@click.option("--stage-cache/--no-stage-cache", default=True, show_default=True,
              help="As for run: share pretraining stages through the machine's stage cache.")
@split_by_option
@decontaminate_option
@click.option("--compile", "compile_", type=click.Choice(COMPILE_MODES, case_sensitive=False), default=None,
              help="As for run [default: $PARAISITE_BENCH_COMPILE or auto].")
@dry_run_option
def select(candidates, dataset, repeats, epochs, pretrain_epochs, pretrain_batch_size, stage_epochs,
           stage_options, subsample, rule, seed, selection, out, data_dir, cache_dir, workers, threads,
           plugin_modules, progress, report_only, compile_=None, split_by=None, decontaminate=None,
           stage_cache=True, dry_run=False):
    """Model-selection stability study (the paper's Fig. 2): rank candidates by a stated rule."""
    study = StabilityStudy(
        candidates=tuple(candidates.split(",")), dataset=dataset, repeats=repeats, rule=rule, epochs=epochs,
        pretrain_epochs=pretrain_epochs, pretrain_batch_size=pretrain_batch_size,
        stage_options=_stage_options(stage_options, stage_epochs),
        subsample=_pairs(subsample, "--subsample") or (),
        seed=seed, selection=_lower(selection), report_only=report_only, split_by=_lower(split_by),
        decontaminate=_lower(decontaminate))
    options = LaunchOptions(out=out, data_dir=data_dir, cache_dir=cache_dir,
                            plugin_modules=tuple(plugin_modules), workers=workers, threads=threads,
                            stage_cache=stage_cache, device="cpu", compile_mode=_lower(compile_),
                            progress=progress)
    if dry_run:
        _dry_run(study, options)
    else:
        run_command(study, options)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the (merged) report here, with table1.md, "
              "table1.tex and merged CSVs next to it. Without it, RUN_DIR's own outputs are rewritten.")
@click.option("--plugin", "plugin_modules", multiple=True,
              help="Also load this importable plugin module (e.g. one that adds a report section).")
@click.option("--leave-out", "leave_out", multiple=True, metavar="SECTION",
              help="Leave this section out of the page (repeatable; e.g. curves and splits of a merged "
                   "report whose runs' own reports have them); the page says which were left out.")
def report(run_dirs, out, plugin_modules, leave_out):
    """Rebuild the report of one or more run directories from their stores (never retrains).

    One RUN_DIR without --out: rewrite its results.csv, table1.csv, curves.csv, report.html, table1.md and
    table1.tex. Several RUN_DIRs (e.g. one per backbone): --out names the merged report.html. RUN_DIRs that
    are parts of one run (`run --only-splits`, same protocol, backbones, strategies, train, test, baselines
    and data) are joined into that run: its Table I is the one a single run with all the splits gives."""
    registry = load_plugins(plugin_modules)
    for name, err in registry.broken:
        warn(f"plugin {name} is broken and was skipped: {err}")
    sections = ordered_sections(registry)
    unknown = sorted(set(leave_out) - {sec.name for sec in sections})
    if unknown:
        raise UserError(f"--leave-out {', '.join(unknown)}: no such report section; the sections are "
                        + ", ".join(sec.name for sec in sections))
    kept = [sec for sec in sections if sec.name not in leave_out]
    data, paths = rewrite_outputs(run_dirs, kept, Path(out) if out else None,
                                  left_out=[sec.title for sec in sections if sec.name in leave_out])
    joined = f" joined into {len(data.runs)}" if len(data.runs) < len(run_dirs) else ""
    click.echo(f"{len(data.rows)} results, {len(data.table)} cells from {len(run_dirs)} run(s){joined} → "
               f"{paths['html']} (+ {paths['md'].name}, {paths['tex'].name})")


@cli.command()
@click.argument("datasets", nargs=-1)
@click.option("--data-dir", type=click.Path(), help="Data root with ltc/ (else $PARAISITE_BENCH_DATA).")
@click.option("--cache-dir", type=click.Path(file_okay=False),
              help="Cache of symmetry keys and structure matches (else $PARAISITE_BENCH_CACHE).")
@click.option("--split-by", type=click.Choice(sorted(SPLIT_MODES), case_sensitive=False), default="random",
              show_default=True, help="The splits to audit (see run --split-by).")
@click.option("--splits", type=click.IntRange(1), default=9, show_default=True)
@click.option("--seed", type=int, default=Protocol.seed, show_default=True)
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
@click.option("--dataset-file", "dataset_files", multiple=True, metavar="[NAME=]PATH",
              help="Also audit your own dataset (as for run).")
def audit(datasets, data_dir, cache_dir, split_by, splits, seed, plugin_modules, dataset_files):
    """Which records are the same (formula twins, matching structures) within and across DATASETS, and
    how many test records of each split have a twin in its training part. Trains nothing.

    DATASETS default to every registered atomic dataset whose data loads (and the --dataset-file ones)."""
    registry = load_plugins(plugin_modules)
    user = dataset_specs(dataset_files)
    add_datasets(registry, user)
    protocol = Protocol(splits=splits, seed=seed, split_by=split_by.lower())
    ctx = Context(registry, resolve_data_dir(data_dir), protocol, Path(cache_dir) if cache_dir else None)
    names = [registry.dataset(n.lower()).name for n in datasets]
    if not names:
        for name, spec in sorted(registry.datasets.items()):
            if spec.components:
                continue
            try:
                ctx.dataset(name)
            except UserError as exc:
                warn(f"{name} left out: {exc}")
                continue
            names.append(name)
    options = SplitOptions(seed, protocol.test_fraction, protocol.inner_val_fraction, protocol.split_by)
    from .overlap import audit_lines

    for line in audit_lines(ctx, names, options, splits):
        click.echo(line)


def _models(args: tuple[str, ...], model_path, backbone, strategy, train, data_dir, cache_dir,
            registry) -> tuple:
    """(model set, context, inputs) of ``predict``: from a bundle (--model) or from RUN_DIR (the first
    argument), the cell chosen as given or by the lowest mean MAPE."""
    cache = Path(cache_dir) if cache_dir else None
    if model_path:
        if backbone or strategy or train:
            raise UserError("--backbone/--strategy/--train choose a cell of a run: "
                            "a bundle (--model) holds one")
        return load_bundle(Path(model_path), registry), Context(registry, Path("."), Protocol(), cache), args
    if not args:
        raise UserError("give RUN_DIR and INPUT..., or --model FILE.pbm and INPUT...")
    modelset, ctx = modelset_from_run(Path(args[0]), registry, _run_data_dir(data_dir, args[0]), cache,
                                      backbone, strategy, train)
    click.echo(f"cell {cell_label(modelset.cell)}: {modelset.provenance['chosen']}")
    return modelset, ctx, args[1:]


def _run_data_dir(data_dir: str | None, run_dir: str) -> Path:
    """--data-dir, else $PARAISITE_BENCH_DATA, else the data root the run recorded."""
    info, _rows = read_run(Path(run_dir))  # not a run directory: say that first
    if not data_dir and not os.environ.get("PARAISITE_BENCH_DATA"):
        data_dir = info.get("data_dir")
    return resolve_data_dir(data_dir)


@cli.command()
@click.argument("args", nargs=-1, metavar="[RUN_DIR] INPUT...")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="A model bundle written by `paraisite-bench export` (then no RUN_DIR).")
@click.option("--backbone", help="Cell of RUN_DIR (default: the cell with the lowest mean MAPE).")
@click.option("--strategy", help="Cell of RUN_DIR (default: the cell with the lowest mean MAPE).")
@click.option("--train", help="Cell of RUN_DIR (default: the cell with the lowest mean MAPE).")
@click.option("--out", type=click.Path(dir_okay=False), default="predictions.csv", show_default=True,
              help="The CSV, sorted by κ; predictions.html is written next to it.")
@click.option("--top", type=click.IntRange(1), help="Write only the N lowest κ (CSV and page).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Processes featurising the inputs.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Torch threads (one is fastest for these small graphs).")
@click.option("--data-dir", type=click.Path(), help="Data root (else $PARAISITE_BENCH_DATA or the run's).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Feature cache (as for run).")
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
def predict(args, model_path, backbone, strategy, train, out, top, workers, threads, data_dir, cache_dir,
            plugin_modules, progress):
    """κ of new structures from a run's trained models (or a bundle): CIF files, folders of CIFs, and CSV or
    JSON files as --dataset-file reads them (κ optional: when given, the errors are reported too)."""
    with use_threads(threads):
        _predict(args, model_path, backbone, strategy, train, out, top, workers, data_dir, cache_dir,
                 plugin_modules, progress)


def _predict(args, model_path, backbone, strategy, train, out, top, workers, data_dir, cache_dir,
             plugin_modules, progress):
    """predict's steps: the models, the inputs, the screen, the files, the summary."""
    registry = load_plugins(plugin_modules)
    modelset, ctx, inputs = _models(args, model_path, backbone, strategy, train, data_dir, cache_dir,
                                    registry)
    if not inputs:
        raise UserError("give at least one INPUT: a CIF file, a folder of CIFs, or a CSV/JSON file")
    records = read_inputs(inputs)
    pred, skipped = screen(modelset, ctx, records, workers, progress, tuple(plugin_modules),
                           announce=lambda line: click.echo(f"skipped: {line}", err=True))
    rows = write_prediction_files(modelset, records, pred, skipped, Path(out), top=top)
    for line in summary_lines(rows, modelset):
        click.echo(line)
    click.echo(f"  → {out} (+ {Path(out).with_suffix('.html').name})")


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--backbone", help="Cell (default: the cell with the lowest mean MAPE).")
@click.option("--strategy", help="Cell (default: the cell with the lowest mean MAPE).")
@click.option("--train", help="Cell (default: the cell with the lowest mean MAPE).")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="The bundle, e.g. model.pbm.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Torch threads (one is fastest for these small graphs).")
@click.option("--data-dir", type=click.Path(), help="Data root (else $PARAISITE_BENCH_DATA or the run's).")
@click.option("--cache-dir", type=click.Path(file_okay=False), help="Feature cache (as for run).")
@click.option("--plugin", "plugin_modules", multiple=True, help="Also load this importable plugin module.")
def export(run_dir, backbone, strategy, train, out, threads, data_dir, cache_dir, plugin_modules):
    """Write one cell's models to a self-describing bundle that `predict --model` uses without the run."""
    with use_threads(threads):
        registry = load_plugins(plugin_modules)
        modelset, _ctx = modelset_from_run(Path(run_dir), registry, _run_data_dir(data_dir, run_dir),
                                           Path(cache_dir) if cache_dir else None, backbone, strategy, train)
        digest = save_bundle(modelset, Path(out))
        cal = modelset.calibration
        click.echo(f"cell {cell_label(modelset.cell)}: {modelset.provenance['chosen']}")
        size = Path(out).stat().st_size / 1e6
        click.echo(f"{len(modelset.members)} model(s) → {out} ({size:.1f} MB, sha256 {digest}); validation "
                   f"coverage of the interval {cal['coverage']:.2f}, of the models' P10–P90 "
                   f"{cal['raw_coverage']:.2f}")


def main(argv=None):
    """Entry point: user errors are one line on stderr (exit 2), never a traceback."""
    try:
        cli.main(args=argv, prog_name="paraisite-bench", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("error: interrupted; run the same command again to resume", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("PARAISITE_BENCH_DEBUG"):
            raise
        click.echo(f"error: internal error {type(exc).__name__}: {exc} "
                   "(set PARAISITE_BENCH_DEBUG=1 for the traceback, and please report it)", err=True)
        sys.exit(3)


if __name__ == "__main__":
    main()
