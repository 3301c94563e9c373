"""What every command that trains does, written once: resolve the data root, load the plugins (warning
about broken ones), register the run's own datasets, choose the executor and device, build the
context, take the run directory (its store is locked for the command), record, execute, write the
outputs even after a failure or Ctrl-C, and end with the right exit status.

A command (``run`` in :mod:`paraisite_bench.cli`, ``select`` in :mod:`paraisite_bench.study`) is a
:class:`Command` that says only what differs: how it builds its plan, what it records, which outputs
it writes and what it prints (:func:`run_command` calls them in order)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import click

from .compilation import compile_mode
from .context import Context
from .data import DatasetSpec, resolve_data_dir
from .errors import UserError
from .executors import resolve_device
from .jobs import Plan
from .outputs import file_log, writable_run_dir, write_run_outputs
from .plugins import Registry, load_registry
from .protocol import Protocol
from .report import ordered_sections
from .results import ReportData
from .runner import RunOutcome, execute
from .stagecache import StageCache
from .store import Store
from .userdata import add_datasets, dataset_specs
from .worker import WorkerSetup


def command_line() -> str:
    """The command as typed, for the run's records."""
    return " ".join(["paraisite-bench", *sys.argv[1:]])


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


#: failed jobs a summary prints before "and M more — see failures.csv"
SHOW_FAILED = 5


def echo_failures(out_dir: Path, outcome: RunOutcome) -> None:
    """Each failed plugin once (its traceback under ``PARAISITE_BENCH_DEBUG=1``), then the failed jobs: the
    first SHOW_FAILED and how many more (all of them are in failures.csv)."""
    for exc in outcome.plugin_failures:
        click.echo(f"  {exc}")
        if os.environ.get("PARAISITE_BENCH_DEBUG") and exc.traceback:
            click.echo(exc.traceback, err=True)
    for label, err in outcome.failed[:SHOW_FAILED]:
        click.echo(f"  FAILED {label}: {err}")
    if len(outcome.failed) > SHOW_FAILED:
        click.echo(f"  and {len(outcome.failed) - SHOW_FAILED} more — see {Path(out_dir) / 'failures.csv'}")


def load_plugins(plugin_modules: Iterable[str] = ()) -> Registry:
    """The registry of the entry-point plugins and of the ``--plugin`` modules."""
    modules = []
    for name in plugin_modules:
        try:
            modules.append(importlib.import_module(name))
        except Exception as exc:
            raise UserError(f"--plugin {name!r} cannot be imported ({type(exc).__name__}: {exc})") from None
    return load_registry(modules)


def protocol_with(base: Protocol, **options) -> Protocol:
    """``base`` with the given options (None: keep the base's). Selecting the epoch on a held-out part of
    the training data fits the label scaler on training labels unless ``scaler_fit`` is given: that mode
    never lets the scaler see validation labels."""
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("selection") == "heldout":
        given.setdefault("scaler_fit", "train")
    return dataclasses.replace(base, **given)


@dataclass(frozen=True)
class LaunchOptions:
    """The options every command that trains takes."""

    out: str
    data_dir: str | None = None
    cache_dir: str | None = None
    plugin_modules: tuple[str, ...] = ()
    #: ``--dataset-file`` values: ``[NAME=]PATH``
    dataset_files: tuple[str, ...] = ()
    workers: int = 1
    threads: int = 1
    #: take the stages that others build on from the machine's stage cache and put them there
    #: (:mod:`paraisite_bench.stagecache`)
    stage_cache: bool = True
    #: a registered executor; None: inline with one worker, local with more
    executor: str | None = None
    address: str | None = None
    device: str = "auto"
    #: None: ``$PARAISITE_BENCH_COMPILE`` or auto
    compile_mode: str | None = None
    #: None: progress bars only on a terminal
    progress: bool | None = None


@dataclass(frozen=True)
class Launch:
    """The options made concrete, before anything is written: the data root, the registry (plugins and
    the run's own datasets), the executor and the device."""

    options: LaunchOptions
    data_dir: Path
    registry: Registry
    datasets: tuple[DatasetSpec, ...]
    executor: str
    device: str
    compile_mode: str

    def check_names(self, kind: str, names: Iterable[str]) -> None:
        for name in names:
            self.registry.get(kind, name)

    def context(self, protocol: Protocol) -> Context:
        """The command's one context; the datasets named in the protocol's per-dataset options exist."""
        per_dataset = protocol.subsample + protocol.stage_options
        self.check_names("dataset", [name for name, _ in per_dataset] + [d for _, d in protocol.pretraining])
        self.check_names("backbone", [b for b, _ in protocol.pretraining])
        recipes = [dict(options).get("recipe") for _, options in protocol.stage_options]
        self.check_names("recipe", [r for r in recipes if r])
        cache = Path(self.options.cache_dir) if self.options.cache_dir else None
        return Context(self.registry, self.data_dir, protocol, cache)

    def worker_setup(self, ctx: Context) -> WorkerSetup:
        return WorkerSetup(data_dir=ctx.data_dir, cache_dir=ctx.cache_dir, protocol=ctx.protocol,
                           plugin_modules=tuple(self.options.plugin_modules), datasets=self.datasets,
                           threads=self.options.threads, device=self.device, compile_mode=self.compile_mode)


def prepare(options: LaunchOptions) -> Launch:
    """Check the options that need no plan: data root, plugins, the run's datasets, executor, device."""
    data_dir = resolve_data_dir(options.data_dir)
    registry = load_plugins(options.plugin_modules)
    for name, err in registry.broken:
        warn(f"plugin {name} is broken and was skipped: {err}")
    datasets = tuple(dataset_specs(options.dataset_files))
    add_datasets(registry, datasets)
    name = options.executor or ("inline" if options.workers <= 1 else "local")
    executor = registry.get("executor", name)
    if options.address and not executor.takes_address:
        takers = " or ".join(f"--executor {n}" for n, e in sorted(registry.executors.items())
                             if e.takes_address)
        raise UserError(f"--address names a cluster: use it with {takers or 'an executor that takes one'}")
    # a remote executor resolves the device on each worker (the launcher may have no GPU)
    device = options.device.lower() if executor.remote else resolve_device(options.device)
    mode = options.compile_mode.lower() if options.compile_mode else compile_mode()
    return Launch(options, data_dir, registry, datasets, executor.name, device, mode)


@dataclass
class RunDir:
    """A run directory while a command uses it: its store (locked), its log, the command's plan."""

    path: Path
    store: Store
    log: Callable[[str], None]
    launch: Launch
    ctx: Context
    plan: Plan
    started: str = ""
    finished: str = ""
    wall_s: float = 0.0


class Command:
    """What differs between the commands that train; :func:`run_command` calls these in order."""

    #: the run directory's log file
    log_name = "run.log"

    def plan(self, launch: Launch) -> tuple[Context, Plan]:
        """Check the command's names, build its one context and its plan (nothing written yet)."""
        raise NotImplementedError

    def start(self, run: RunDir) -> None:
        """Record what the command is about to do (the store is locked, no job has run)."""

    def execute(self, run: RunDir) -> RunOutcome:
        return execute_plan(run)

    def finish(self, run: RunDir, outcome: RunOutcome | None) -> Any:
        """Write the outputs from the store, also after a failure or Ctrl-C; return what :meth:`summary`
        shows."""
        raise NotImplementedError

    def summary(self, run: RunDir, outcome: RunOutcome, result: Any) -> None:
        """Print what the command did."""


def execute_plan(run: RunDir) -> RunOutcome:
    """The plan's unfinished jobs, on the chosen executor, its workers set up from the launch."""
    launch = run.launch
    return execute(run.plan, run.ctx, run.store, launch.worker_setup(run.ctx), launch.executor,
                   workers=launch.options.workers, address=launch.options.address,
                   progress=launch.options.progress, log=run.log, cache=stage_cache(run))


def stage_cache(run: RunDir) -> StageCache | None:
    """The machine's stage cache (``<cache_dir>/stages``), unless ``--no-stage-cache``."""
    return StageCache(run.ctx.cache_dir / "stages") if run.launch.options.stage_cache else None


def stages_from_cache(run: RunDir) -> list[dict]:
    """The plan's stages that this run directory took from the stage cache (key and label), for run.json."""
    out = []
    for key, spec in run.plan.stages.items():
        row = run.store.stage(key)
        if row and row["status"] == "done" and row.get("origin") == "cache":
            out.append({"key": key, "label": spec.label})
    return out


def write_outputs(run: RunDir, run_info: dict, skipped: list[dict] | None = None) -> ReportData:
    """results.csv, table1.csv, curves.csv, skipped.csv and the report of a run directory, from its store,
    with the report sections of the run's plugins."""
    return write_run_outputs(run.path, run.store, run_info, ordered_sections(run.launch.registry), skipped)


def skipped_rows(ctx: Context, plan: Plan) -> list[dict]:
    """The records the datasets rejected and the backbone × strategy combinations the plan left out."""
    rows = [{"dataset": e.source, "id": e.record_id, "problem": e.problem, "hint": e.hint}
            for e in {(e.source, e.record_id): e for e in ctx.skipped}.values()]
    rows += [{"dataset": "", "id": f"{b} × {s}", "problem": f"skipped: {reason}",
              "hint": "choose a backbone and strategy that fit (see `paraisite-bench plugins`)"}
             for b, s, reason in plan.skipped]
    return rows


def _now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


def run_command(command: Command, options: LaunchOptions) -> Any:
    """Plan, take the run directory, record, execute, write the outputs, summarise; exit status 1 when a
    job or a plugin (a baseline) failed, a user error when interrupted (what finished is stored: the same
    command resumes)."""
    started = _now()
    launch = prepare(options)
    ctx, plan = command.plan(launch)
    out_dir = writable_run_dir(options.out)
    store = Store(out_dir / "store.sqlite")
    run = RunDir(out_dir, store, file_log(out_dir / command.log_name), launch, ctx, plan, started=started)
    outcome = None
    try:
        command.start(run)
        t0 = time.time()
        try:
            outcome = command.execute(run)
        finally:
            run.finished, run.wall_s = _now(), round(time.time() - t0, 1)
            result = command.finish(run, outcome)
    finally:
        store.close()
    command.summary(run, outcome, result)
    if outcome.interrupted:
        raise UserError(f"interrupted: finished jobs are stored in {out_dir}; run the same command to resume")
    if outcome.failed or outcome.plugin_failures:
        sys.exit(1)
    return result
