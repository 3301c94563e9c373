"""The cost of a run before it starts (``run --dry-run``): what it would train, reuse and evaluate, and an
estimated wall time from rates this machine measured.

Rates are measured, never assumed: for each (backbone and its settings, dataset, batch size, head, eager
or compiled) that the plan trains, repeated passes of a few real training steps of the real model on real
featurised records of that dataset, through the training loop's own steps (:mod:`paraisite_bench.train`),
and of validation (the median pass counts, :func:`_timed`); featurisation and baselines are timed on a
sample. They are kept per machine and timing method (host, CPU, threads, device, torch version, timing
settings) in ``<cache_dir>/rates/<fingerprint>.json``: a second dry run on the same machine reuses them.

The wall time is a simulation of the runner's schedule (:class:`paraisite_bench.runner.Schedule`): the jobs
still to do, in dependency order, stages that others build on first, on ``--workers`` workers; a job takes
epochs × (training records / training rate + validation records / evaluation rate), plus its evaluations.
Featurisation of uncached features, baselines and the one-off compilation of each worker come on top.
Records a backbone cannot featurise and those a decontaminated stage leaves out are counted (an upper
bound); more workers × threads than CPU cores slow every job in proportion.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import click
import torch

from .baselines import plan_cells, planned_baselines, score_cell
from .compilation import wants_compile
from .context import Context
from .errors import RecordError
from .jobs import Plan
from .outputs import machine_info
from .parts import splits_text
from .protocol import stable_hash
from .runner import plan_tasks, shared_stages
from .stagecache import StageCache
from .store import Store
from .strategy import Init
from .train import StageData, _batching, _model_and_recipe, _train_epoch, _validate, stage_data_of
from .worker import Task

#: training steps in one timed pass over the sampled records
TIMED_STEPS = 10
#: a rate is the median of repeated passes (after an untimed one, which pays for allocations and compiling):
#: at least MIN_PASSES passes and MIN_TIMED_S seconds in all. One pass of five batches of 8 lasted tens of
#: milliseconds, and two dry runs on one quiet machine priced the same AFLOW stage at 26.6 and 41.6 min.
MIN_PASSES = 3
MIN_TIMED_S = 2.0
#: validation records timed per rate
EVAL_SAMPLE = 128
#: records featurised to time a featuriser whose features are not cached
FEATURISE_SAMPLE = 16
#: what a training rate holds (records per second, seconds to compile)
RATE_FIELDS = ("train_per_s", "eval_per_s", "compile_s")


@dataclass(frozen=True)
class Resources:
    """What the run would use: ``--workers``, ``--threads``, the resolved device and compile mode."""

    workers: int = 1
    threads: int = 1
    device: str = "cpu"
    compile_mode: str = "auto"
    stage_cache: bool = True

    @staticmethod
    def of(launch) -> "Resources":
        """The resources of a :class:`paraisite_bench.orchestrate.Launch`."""
        o = launch.options
        return Resources(o.workers, o.threads, launch.device, launch.compile_mode, o.stage_cache)


# ---- rates, per machine -----------------------------------------------------------------------------

class RateBook:
    """Measured rates of one machine and set-up, in ``<cache_dir>/rates/<fingerprint>.json``."""

    def __init__(self, cache_dir: Path, res: Resources):
        info = machine_info()
        self.fingerprint = {"host": platform.node(), "cpu": info.get("cpu"), "gpu": info.get("gpu"),
                            "threads": res.threads, "device": res.device, "torch": torch.__version__,
                            # rates timed another way are not reused
                            "timing": [TIMED_STEPS, MIN_PASSES, MIN_TIMED_S]}
        self.path = Path(cache_dir) / "rates" / f"{stable_hash(self.fingerprint)[:16]}.json"
        try:
            self.rates = json.loads(self.path.read_text())["rates"]
        except (OSError, ValueError, KeyError, TypeError):
            self.rates = {}
        if not isinstance(self.rates, dict):
            self.rates = {}
        #: keys measured by this process (the others came from the file)
        self.measured: set[str] = set()

    def get(self, key: str, *fields: str) -> dict | None:
        """The rate kept under ``key``, or None when it lacks one of ``fields`` (a damaged file: measured
        again)."""
        rate = self.rates.get(key)
        if not isinstance(rate, dict) or not all(isinstance(rate.get(f), (int, float)) for f in fields):
            return None
        return rate

    def put(self, key: str, value: dict) -> None:
        """Keep a measured rate, with the load it was measured under (other processes slow it down)."""
        self.rates[key] = dict(value, load=round(os.getloadavg()[0], 1),
                               measured=time.strftime("%Y-%m-%d %H:%M"))
        self.measured.add(key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "rates": self.rates}, indent=1))
        os.replace(tmp, self.path)

    def source(self, key: str) -> str:
        return "measured" if key in self.measured else "cached"


@dataclass
class StageCost:
    """A job of the plan still to do: its stage (trained or only evaluated), sizes and estimated time."""

    task: Task
    epochs: int
    n_train: int
    n_val: int
    #: test dataset -> records scored (per reading)
    n_test: dict[str, int]
    rate_key: str
    #: whether the stage's training step would be compiled (``--compile``, a long stage)
    compiled: bool = False
    train_s: float = 0.0
    eval_s: float = 0.0

    @property
    def seconds(self) -> float:
        return self.train_s + self.eval_s


@dataclass
class Estimate:
    """What a run would do (its jobs, the stages it reuses or takes from the stage cache) and its times."""

    jobs: list[StageCost]
    #: stages already done in the run's store
    reused: int
    #: keys of the stages the stage cache would give
    from_cache: list[str]
    #: rate key -> rate entry, with its "source" (measured or cached)
    rates: dict[str, dict] = field(default_factory=dict)
    #: (backbone, dataset, records, seconds) of the features not cached
    featurise: list[tuple[str, str, int, float]] = field(default_factory=list)
    baselines: int = 0
    baselines_s: float = 0.0
    compile_s: float = 0.0
    slowdown: float = 1.0
    makespan_s: float = 0.0

    @property
    def total_s(self) -> float:
        return (self.makespan_s + sum(f[3] for f in self.featurise) + self.baselines_s + self.compile_s)


def rate_key(ctx: Context, backbone: str, dataset: str, options: dict, compiled: bool) -> str:
    bb = ctx.backbone(backbone)
    return stable_hash({"backbone": bb.name, "settings": bb.settings(), "dataset": dataset,
                        "batch_size": options["batch_size"], "head": list(options["head"]),
                        "compiled": compiled})


def _sample_ids(ctx: Context, dataset: str, n: int) -> list[str]:
    ids = sorted(ctx.dataset(dataset).records)
    return random.Random(0).sample(ids, min(n, len(ids)))


def sample_features(ctx: Context, backbone: str, dataset: str, n: int) -> dict:
    """Features of up to ``n`` records of ``dataset``: from the feature cache when it has them, else
    featurised here (only these records; nothing written)."""
    atoms = ctx.atomic_names(dataset)
    ids = _sample_ids(ctx, dataset, n)
    if all(ctx.feature_cache_path(backbone, a).exists() for a in atoms):
        feats = ctx.features(backbone, dataset)
        return {i: feats[i] for i in ids if i in feats}
    bb, records = ctx.backbone(backbone), ctx.dataset(dataset).records
    out = {}
    for i in ids:
        try:
            out[i] = bb.featurise(records[i])
        except RecordError:
            continue
    return out


def _sample_data(ctx: Context, spec, feats: dict, device: torch.device) -> StageData:
    """A stage's data made of sampled records: TIMED_STEPS batches to train on, EVAL_SAMPLE to validate."""
    ids = list(feats)
    bs = spec.options["batch_size"]
    train_ids = [ids[k % len(ids)] for k in range(bs * TIMED_STEPS)]
    val_ids = [ids[k % len(ids)] for k in range(EVAL_SAMPLE)]
    return stage_data_of(ctx, spec.dataset, feats, train_ids, val_ids, ids, device)


def measure_rate(ctx: Context, spec, compiled: bool, res: Resources) -> dict:
    """Records per second of a stage's training steps and of its validation, timed on real records with the
    training loop's own steps (eager or compiled as the stage would be; a model that loads a previous stage
    starts from random weights here: the same computation)."""
    device = torch.device(res.device)
    bb = ctx.backbone(spec.backbone)
    feats = sample_features(ctx, spec.backbone, spec.dataset, spec.options["batch_size"] * TIMED_STEPS)
    data = _sample_data(ctx, spec, feats, device)
    start = spec.init if spec.init.kind == "weights" else Init.random()
    model, _info, recipe = _model_and_recipe(ctx, replace(spec, init=start, parent=None), None, "fast",
                                             device, len(data.train_ids))
    make_batch, predict_val = _batching(bb, model, data, "fast", device)
    threads = torch.get_num_threads()
    torch.set_num_threads(res.threads)
    flush = device.type == "cpu" and torch.set_flush_denormal(True)  # as train_stage does
    try:
        t0 = time.perf_counter()
        if compiled:
            sample = make_batch(list(range(spec.options["batch_size"])))
            bb.accelerate(model.backbone, sample if device.type == "cpu" else bb.to_device(sample, device))
        compile_s = time.perf_counter() - t0
        train_s = _timed(lambda: _train_epoch(model, bb, recipe, make_batch, data, torch.Generator(),
                                              spec.options["batch_size"], device))
        eval_s = _timed(lambda: _validate(model, predict_val, data))
    finally:
        torch.set_num_threads(threads)
        if flush:
            torch.set_flush_denormal(False)
    return {"backbone": spec.backbone, "dataset": spec.dataset, "batch_size": spec.options["batch_size"],
            "compiled": compiled, "train_per_s": len(data.train_ids) / train_s,
            "eval_per_s": len(data.val_ids) / eval_s, "compile_s": round(compile_s, 2) if compiled else 0.0}


def _timed(step) -> float:
    """Seconds of one run of ``step``: the median of repeated runs after an untimed first one."""
    step()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_PASSES or time.perf_counter() - start < MIN_TIMED_S:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return max(statistics.median(times), 1e-9)


# ---- the jobs still to do ---------------------------------------------------------------------------

def pending_jobs(plan: Plan, store: Store, cache: StageCache | None) -> tuple[list[Task], int, list[str]]:
    """(tasks still to do, stages reused from the run's store, shared stages the stage cache would give),
    as :func:`paraisite_bench.runner.execute` would find them (``store`` may be a read-only view)."""
    tasks, reused = plan_tasks(plan, store)
    shared = shared_stages(plan)
    from_cache = [t.spec.key for t in tasks if t.train and cache is not None and t.spec.key in shared
                  and cache.has(t.spec.key)]
    taken = set(from_cache)
    tasks = [replace(t, train=False) if t.spec.key in taken else t for t in tasks
             if t.spec.key not in taken or t.tests]
    return tasks, reused, from_cache


def _readings(options: dict) -> int:
    """Readings evaluated per test dataset: the paper regime scores its selected and its last epoch."""
    return 2 if options["selection"] == "paper" else 1


def job_cost(ctx: Context, task: Task, res: Resources) -> StageCost:
    """A job's sizes (split sizes: records a backbone cannot featurise are counted) and its rate key."""
    spec = task.spec
    split = ctx.split(spec.dataset, spec.split, spec.options)
    paper = spec.options["selection"] == "paper"
    n_train, n_val = (len(split.train), len(split.test)) if paper else (len(split.inner_train),
                                                                         len(split.inner_val))
    bs = spec.options["batch_size"]
    steps = spec.options["epochs"] * math.ceil(n_train / bs)
    compiled = res.device == "cpu" and wants_compile(steps, res.compile_mode)
    tests = {te: len(ctx.split(te, spec.split, spec.options).test) for te in task.tests}
    return StageCost(task, spec.options["epochs"], n_train, n_val, tests,
                     rate_key(ctx, spec.backbone, spec.dataset, spec.options, compiled), compiled)


def _rates(ctx: Context, costs: list[StageCost], book: RateBook, res: Resources,
           measure: bool) -> dict[str, dict] | None:
    """rate key -> rate of every job's stage (measured when the book lacks it and ``measure``); None when
    one is missing and not measured."""
    out: dict[str, dict] = {}
    for c in costs:
        if c.rate_key in out:
            continue
        rate = book.get(c.rate_key, *RATE_FIELDS)
        if rate is None:
            if not measure:
                return None
            rate = measure_rate(ctx, c.task.spec, c.compiled, res)
            book.put(c.rate_key, rate)
            rate = book.get(c.rate_key)
        out[c.rate_key] = dict(rate, source=book.source(c.rate_key))
    return out


def _eval_rate(rates: dict[str, dict], backbone: str, dataset: str, own: dict) -> float:
    """Records per second scoring ``dataset``: its own measured rate when the plan trains on it, else the
    stage's."""
    same = [r["eval_per_s"] for r in rates.values()
            if r.get("backbone") == backbone and r.get("dataset") == dataset]
    return same[0] if same else own["eval_per_s"]


def price(costs: list[StageCost], rates: dict[str, dict], slowdown: float) -> None:
    """Each job's training and evaluation time from the rates (``slowdown``: CPU oversubscription)."""
    for c in costs:
        rate = rates[c.rate_key]
        if c.task.train:
            c.train_s = slowdown * c.epochs * (c.n_train / rate["train_per_s"] + c.n_val / rate["eval_per_s"])
        reads = _readings(c.task.spec.options)
        c.eval_s = slowdown * sum(reads * n / _eval_rate(rates, c.task.spec.backbone, te, rate)
                                  for te, n in c.n_test.items())


def simulate(costs: list[StageCost], workers: int, first: set[str]) -> float:
    """The makespan of the jobs under the runner's list scheduling: in plan order, the stages of ``first``
    (those others build on) first, each started on a free worker once its previous stage is done."""
    keys = {c.task.spec.key for c in costs if c.task.train}
    pending = sorted(costs, key=lambda c: c.task.spec.key not in first)
    running: list[tuple[float, str]] = []
    now = 0.0
    done: set[str] = set()
    while pending or running:
        for c in list(pending):
            if len(running) >= workers:
                break
            parent = c.task.spec.parent
            if parent in keys and parent not in done:
                continue
            pending.remove(c)
            running.append((now + c.seconds, c.task.spec.key))
        if not running:
            break
        running.sort()
        now, key = running.pop(0)
        done.add(key)
    return now


# ---- featurisation and baselines ------------------------------------------------------------------

def featurisation(ctx: Context, tasks: list[Task], book: RateBook,
                  measure: bool) -> list[tuple[str, str, int, float]] | None:
    """(backbone, dataset, records, seconds) of every feature set the jobs need that is not cached, from the
    seconds per record of a featurised sample; None when a rate is missing and not measured."""
    needed = {(t.spec.backbone, a) for t in tasks for d in (t.spec.dataset, *t.tests)
              for a in ctx.atomic_names(d)}
    out = []
    for backbone, atom in sorted(needed):
        if ctx.feature_cache_path(backbone, atom).exists():
            continue
        bb = ctx.backbone(backbone)
        key = stable_hash({"featurise": bb.name, "settings": bb.settings(), "dataset": atom})
        if book.get(key, "s_per_record") is None:
            if not measure:
                return None
            book.put(key, {"featurise": bb.name, "dataset": atom,
                           "s_per_record": _featurise_time(ctx, bb, atom)})
        n = len(ctx.dataset(atom).records)
        out.append((bb.name, atom, n, n * book.get(key, "s_per_record")["s_per_record"]))
    return out


def _featurise_time(ctx: Context, bb, dataset: str) -> float:
    records = ctx.dataset(dataset).records
    ids = _sample_ids(ctx, dataset, FEATURISE_SAMPLE)
    t0 = time.perf_counter()
    for i in ids:
        try:
            bb.featurise(records[i])
        except RecordError:
            continue
    return (time.perf_counter() - t0) / max(len(ids), 1)


def baseline_cost(ctx: Context, plan: Plan, store: Store, book: RateBook,
                  measure: bool) -> tuple[int, float] | None:
    """(baseline results to compute, seconds), from one cell of each baseline timed; None when a rate is
    missing and not measured."""
    have = {row["key"] for row in store.baselines()}
    _cells, options_for = plan_cells(plan)
    todo: dict[str, list[tuple]] = {}
    for name, cell, key in planned_baselines(ctx, plan):
        if key not in have:
            todo.setdefault(name, []).append(cell)
    seconds = 0.0
    for name, cells in todo.items():
        train, test, r = cells[0]
        key = stable_hash({"baseline": name, "train": train, "test": test,
                           "data": [ctx.dataset(a).fingerprint for a in ctx.atomic_names(train)]})
        if book.get(key, "s_per_cell") is None:
            if not measure:
                return None
            t0 = time.perf_counter()
            score_cell(ctx, name, train, test, r, options_for(train))
            book.put(key, {"baseline": name, "s_per_cell": time.perf_counter() - t0})
        seconds += len(cells) * book.get(key, "s_per_cell")["s_per_cell"]
    return sum(len(c) for c in todo.values()), seconds


# ---- the estimate and the dry run ---------------------------------------------------------------------

def estimate(ctx: Context, plan: Plan, out: Path | None, res: Resources, *, measure: bool = True,
             store: Store | None = None) -> Estimate | None:
    """What a run of ``plan`` into ``out`` would do and how long it would take (``store``: the run's open
    store, else ``out``'s read without writing); rates the book lacks are measured unless ``measure`` is
    false, then the answer is None."""
    book = RateBook(ctx.cache_dir, res)
    cache = StageCache(ctx.cache_dir / "stages") if res.stage_cache else None
    view = store if store is not None else Store.read_only(Path(out) / "store.sqlite")
    try:
        tasks, reused, from_cache = pending_jobs(plan, view, cache)
        base = baseline_cost(ctx, plan, view, book, measure)
    finally:
        if store is None:
            view.close()
    costs = [job_cost(ctx, t, res) for t in tasks]
    rates = _rates(ctx, costs, book, res, measure)
    feats = featurisation(ctx, tasks, book, measure)
    if base is None or feats is None or rates is None:
        return None
    slowdown = max(1.0, res.workers * res.threads / (os.cpu_count() or 1))
    price(costs, rates, slowdown)
    compiled = {c.rate_key for c in costs if c.task.train and c.compiled}
    return Estimate(costs, reused, from_cache, rates, feats, base[0], base[1],
                    compile_s=max((rates[k]["compile_s"] for k in compiled), default=0.0), slowdown=slowdown,
                    makespan_s=simulate(costs, res.workers, shared_stages(plan)))


def cached_estimate(ctx: Context, plan: Plan, store: Store, launch) -> float | None:
    """The estimated wall time of a run about to start, in seconds, when this machine's rates are all
    cached (a dry run measured them); None otherwise (nothing is measured at the start of a run)."""
    try:
        est = estimate(ctx, plan, None, Resources.of(launch), measure=False, store=store)
    except (OSError, ValueError):  # the estimate is a note: it never stops a run
        return None
    return round(est.total_s, 1) if est is not None else None


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _stage_groups(est: Estimate) -> list[str]:
    """One line per backbone × dataset × epochs of the stages to train."""
    groups: dict[tuple, list[StageCost]] = {}
    for c in est.jobs:
        if c.task.train:
            spec = c.task.spec
            groups.setdefault((spec.backbone, spec.dataset, c.epochs), []).append(c)
    lines = []
    for (backbone, dataset, epochs), cs in groups.items():
        n_train = round(sum(c.n_train for c in cs) / len(cs))
        n_val = round(sum(c.n_val for c in cs) / len(cs))
        each = sum(c.train_s for c in cs) / len(cs)
        lines.append(f"  {backbone:10s} {dataset:12s} {epochs:4d} epochs × {len(cs):3d} stage(s): "
                     f"{n_train:,} training + {n_val:,} validation records per epoch, "
                     f"≈ {duration_text(each)} each")
    return lines


def _rate_lines(est: Estimate, book_path: Path) -> list[str]:
    lines = [f"rates on this machine (records per second; {book_path}: delete it to measure again, e.g. "
             "when the machine's load has changed):"]
    for r in est.rates.values():
        how = "compiled" if r.get("compiled") else "eager"
        lines.append(f"  {r.get('backbone')} / {r.get('dataset')}, batch {r.get('batch_size')}, {how}: "
                     f"{r['train_per_s']:,.0f} training, {r['eval_per_s']:,.0f} evaluation ({r['source']}"
                     + (f", at load {r['load']} on {os.cpu_count()} cores)" if "load" in r else ")"))
    return lines


def dry_run_lines(ctx: Context, plan: Plan, out: Path, res: Resources) -> list[str]:
    """What ``run --dry-run`` prints: the plan, what is reused, and the estimated wall time."""
    est = estimate(ctx, plan, out, res)
    splits = sorted({s.split for s in plan.stages.values()})
    trained = [c for c in est.jobs if c.task.train]
    lines = [f"dry run: nothing is trained and nothing is written under {out}",
             f"plan: {len(plan.stages)} stage(s), {len(plan.cells)} cell result(s), splits "
             f"{splits_text(splits)} of {ctx.protocol.splits}",
             f"stages to train: {len(trained)}", *_stage_groups(est),
             f"stages reused from the run's store: {est.reused}; taken from the stage cache: "
             + (str(len(est.from_cache)) if res.stage_cache else "none (--no-stage-cache)"),
             f"evaluations: {sum(len(c.n_test) for c in est.jobs)} (stage × test dataset) in {len(est.jobs)} "
             f"job(s), ≈ {duration_text(sum(c.eval_s for c in est.jobs))}",
             f"baselines ({', '.join(plan.baselines) or 'none'}): {est.baselines} result(s) to compute, "
             f"≈ {duration_text(est.baselines_s)}"]
    lines += [f"featurisation: {b}/{d}: {n:,} records not cached, ≈ {duration_text(t)}"
              for b, d, n, t in est.featurise] or ["featurisation: every feature set is cached"]
    lines += _rate_lines(est, RateBook(ctx.cache_dir, res).path)
    return lines + _total_lines(est, res)


def _total_lines(est: Estimate, res: Resources) -> list[str]:
    setup = f"{res.workers} worker(s) × {res.threads} thread(s)"
    lines = []
    if est.slowdown > 1:
        lines.append(f"note: {setup} on {os.cpu_count()} CPU core(s): every job counted "
                     f"{est.slowdown:.1f}× slower")
    parts = {"jobs": est.makespan_s, "featurisation": sum(f[3] for f in est.featurise),
             "baselines": est.baselines_s, "compilation": est.compile_s}
    lines.append(f"estimated wall time with {setup} on {res.device}: {duration_text(est.total_s)} ("
                 + ", ".join(f"{k} {duration_text(v)}" for k, v in parts.items()) + ")")
    return lines


def echo_dry_run(ctx: Context, plan: Plan, out: Path, res: Resources) -> None:
    for line in dry_run_lines(ctx, plan, out, res):
        click.echo(line)
