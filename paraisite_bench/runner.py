"""Execute a plan: compute its baselines, featurise what its jobs need, hand the jobs to an executor in
dependency order (stages that others build on first), and record each job in the store as soon as it
finishes.

The executor is looked up by name in the registry (see :class:`paraisite_bench.executors.Executor`
for the contract); this module never knows which one runs the jobs."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from .baselines import run_baselines
from .checkpoint import checkpoint_digest
from .context import Context
from .errors import PluginFailure, UserError
from .executors import Executor
from .jobs import Plan
from .stagecache import StageCache
from .store import Store
from .train import stage_ids
from .worker import Task, WorkerSetup

#: How often the scheduling loop wakes up to deliver progress while jobs run (seconds).
POLL_S = 0.5


@dataclass
class RunOutcome:
    trained: int = 0
    evaluated: int = 0
    reused: int = 0
    failed: list = dataclasses.field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    #: plugins that failed (their bug, not bad data), each reported once; their jobs are in ``failed`` (a
    #: failed baseline has no job: it is only here)
    plugin_failures: list = dataclasses.field(default_factory=list)
    #: baseline results computed (not those already in the store)
    baselines: int = 0
    #: stages taken from the stage cache instead of being trained
    from_cache: int = 0


def evaluated(readings: dict, selection: str, metrics) -> bool:
    """Whether a stage's stored evaluations on one test dataset (``Store.evals(key)[test]``) are complete:
    its selected reading carries every metric the test's target kind has (a store written before a metric
    existed is evaluated again from its checkpoints)."""
    reading = readings.get(selection)
    return bool(reading) and set(metrics) <= set(reading["metrics"])


def shared_stages(plan: Plan) -> set[str]:
    """The stages that other stages of the plan build on (pretraining stages): those the stage cache keeps."""
    return {s.parent for s in plan.stages.values() if s.parent}


def _stored_summary(row: dict) -> dict:
    """A stored stage's training summary, as :func:`paraisite_bench.train.train_stage` returned it."""
    return {k: row[k] for k in ("best_epoch", "best_val", "n_train", "n_val", "weights_info", "curves",
                                "wall_s")}


def exchange_with_cache(plan: Plan, store: Store, cache: StageCache, log=None) -> int:
    """Take the plan's shared stages that this run directory lacks from the stage cache (checked by their
    checksum: a damaged entry is trained again), and give the cache the shared stages it lacks. Returns how
    many stages were taken. A cache that cannot be written is reported in the log and otherwise ignored."""
    taken = 0
    for key in sorted(shared_stages(plan)):
        try:
            if store.done(key) and _intact(store, key):
                if not cache.has(key):
                    row = store.stage(key)
                    cache.put(row["spec"], _stored_summary(row), row["checksum"], store.checkpoint_path(key))
                continue
            record = cache.take(key, store.checkpoint_path(key))
        except (OSError, UserError) as exc:
            if log:
                log(f"stage cache {cache.root}: {exc}")
            continue
        if record is not None:
            store.save_stage(record["spec"], record["summary"], record["checksum"], origin="cache")
            taken += 1
    return taken


def _intact(store: Store, key: str) -> bool:
    return checkpoint_digest(store.checkpoint_path(key)) == store.stage(key)["checksum"]


def plan_tasks(plan: Plan, store: Store) -> tuple[list[Task], int]:
    """The tasks still to do; finished stages (checkpoint present and intact) are reused."""
    tasks, reused = [], 0
    for key, spec in plan.stages.items():
        row = store.stage(key)
        ckpt = store.checkpoint_path(key)
        done = bool(row and row["status"] == "done" and ckpt.exists()
                    and checkpoint_digest(ckpt) == row["checksum"])
        have = store.evals(key) if done else {}
        tests = tuple(t for t in plan.evals.get(key, [])
                      if not evaluated(have.get(t, {}), spec.options["selection"], plan.metrics.get(t, ())))
        if done:
            reused += 1
            if not tests:
                continue
        parent_row = store.stage(spec.parent) if spec.parent else None
        tasks.append(Task(spec, not done, tests, str(ckpt),
                          str(store.checkpoint_path(spec.parent)) if spec.parent else None,
                          parent_row["checksum"] if parent_row else None))
    return tasks, reused


def featurise(ctx: Context, tasks: list[Task], bars_off: bool | None) -> dict[tuple[str, str], PluginFailure]:
    """Featurise every dataset the tasks touch, once, before any job starts (workers read the cache).
    Returns the (backbone, dataset) pairs whose plugin failed (its bug, not bad data): their jobs fail."""
    needed = {(t.spec.backbone, d) for t in tasks for d in (t.spec.dataset, *t.tests)}
    failed: dict[tuple[str, str], PluginFailure] = {}
    for backbone, dataset in sorted(needed):
        try:
            ctx.features(backbone, dataset, progress=lambda **kw: tqdm(**kw, leave=False, disable=bars_off))
        except PluginFailure as exc:
            failed[(backbone, dataset)] = exc
    return failed


def unfeaturisable(ctx: Context, tasks: list[Task],
                   failed: dict[tuple[str, str], PluginFailure]) -> dict[str, str]:
    """stage key -> the error of each task that needs features a plugin failed to compute."""
    out = {}
    for t in tasks:
        for d in (t.spec.dataset, *t.tests):
            exc = failed.get((t.spec.backbone, d))
            if exc is not None:
                out[t.spec.key] = (f"features of {d} unavailable: plugin {exc.plugin} failed to featurise "
                                   f"{exc.n} record(s) (see the plugin failure above)")
                break
    return out


class Progress:
    """Two bars: jobs, and training structures × epochs (so that the ETA weighs a 3,500-structure AFLOW
    epoch more than a 76-structure Dataset1 epoch). ``bars_off`` None: bars only on a terminal."""

    def __init__(self, ctx: Context, tasks: list[Task], bars_off: bool | None):
        self.per_epoch = {t.spec.key: len(stage_ids(ctx, t.spec)[0]) for t in tasks if t.train}
        total = sum(self.per_epoch[t.spec.key] * t.spec.options["epochs"] for t in tasks if t.train)
        self.jobs = tqdm(total=len(tasks), desc="jobs", unit="job", disable=bars_off)
        self.structures = tqdm(total=total, desc="training", unit="structure-epoch", unit_scale=True,
                               disable=bars_off)

    def epoch(self, key: str, epoch: int, total: int) -> None:
        self.structures.update(self.per_epoch[key])

    def job(self, label: str | None = None) -> None:
        self.jobs.update(1)
        if label:
            self.jobs.set_postfix_str(label[-40:])

    def close(self) -> None:
        self.jobs.close()
        self.structures.close()


class Schedule:
    """The job graph as it runs: which tasks wait, which run, which stages later ones may build on, and
    which failed (their dependents are reported as skipped, never run)."""

    def __init__(self, plan: Plan, store: Store, tasks: list[Task], outcome: RunOutcome, log=None,
                 cache: StageCache | None = None):
        self.store = store
        self.cache = cache
        self.shared = shared_stages(plan)
        self.outcome = outcome
        self.log = log
        # stages that others build on (e.g. the AFLOW stage of `double`) start first: the critical path
        has_dependents = {s.parent for s in plan.stages.values() if s.parent}
        self.pending = sorted(tasks, key=lambda t: t.spec.key not in has_dependents)
        self.running: dict[cf.Future, Task] = {}
        to_train = {t.spec.key for t in tasks if t.train}
        self.ready = {k for k in plan.stages if k not in to_train and store.done(k)}
        self.failed: set[str] = set()

    def submit_ready(self, pool: Executor, progress: Progress) -> None:
        """Submit waiting tasks whose parent is ready, while the executor has room."""
        for task in list(self.pending):
            if len(self.running) >= pool.workers:
                break
            parent = task.spec.parent
            if parent in self.failed:
                self.pending.remove(task)  # stored as failed too: the summary and the report agree
                self.record(task, {"key": task.spec.key, "error": "skipped: its previous stage failed"})
                progress.job()
                continue
            if parent is not None and parent not in self.ready:
                continue
            self.pending.remove(task)
            if parent is not None:  # the parent may have been (re)trained in this run
                task = dataclasses.replace(task, parent_checksum=self.store.stage(parent)["checksum"])
            self.running[pool.submit(task)] = task

    def finish(self, fut: cf.Future, progress: Progress) -> None:
        task = self.running.pop(fut)
        try:
            result = fut.result()
        except Exception as exc:  # the worker itself died
            result = {"key": task.spec.key, "error": f"worker died: {type(exc).__name__}: {exc}"}
        self.record(task, result)
        progress.job(task.spec.label)

    def record(self, task: Task, result: dict) -> None:
        """Store a finished job's stage and evaluations, or its failure."""
        spec = task.spec
        if "error" in result:
            self.failed.add(spec.key)
            self.outcome.failed.append((spec.label, result["error"]))
            self.store.save_failure(spec.record(), result["error"])
            if self.log:
                self.log(f"job {spec.label} failed: {result['error']}" + ("\n" + result.get("traceback", "")))
            return
        if task.train:
            self.store.save_stage(spec.record(), result["summary"], result["checksum"])
            self.outcome.trained += 1
            self.share(task, result)
        self.store.save_evals(spec.key, result["evals"])
        # an evaluation is one test set, whatever the number of readings (paper and last) stored for it
        self.outcome.evaluated += len({e["test"] for e in result["evals"]})
        self.ready.add(spec.key)

    def share(self, task: Task, result: dict) -> None:
        """Give the stage cache a stage that others build on, as soon as it is trained."""
        if self.cache is None or task.spec.key not in self.shared:
            return
        try:
            self.cache.put(task.spec.record(), result["summary"], result["checksum"], Path(task.checkpoint))
        except (OSError, UserError) as exc:
            if self.log:
                self.log(f"stage cache {self.cache.root}: {exc}")

    def run(self, pool: Executor, progress: Progress) -> None:
        """Until every task has finished or been skipped."""
        while self.pending or self.running:
            self.submit_ready(pool, progress)
            if not self.running:
                if self.pending:  # nothing can start: a dependency is missing from the plan
                    raise RuntimeError("job graph stalled: " + ", ".join(t.spec.label for t in self.pending))
                break
            done, _ = cf.wait(list(self.running), timeout=POLL_S, return_when=cf.FIRST_COMPLETED)
            pool.poll()
            for fut in done:
                self.finish(fut, progress)


def fail_unfeaturisable(ctx: Context, tasks: list[Task], failed: dict[tuple[str, str], PluginFailure],
                        outcome: RunOutcome, log=None) -> dict[str, tuple[Task, str]]:
    """Report each failed plugin once (in ``outcome`` and the log, with its traceback); the tasks that
    need its features, by stage key, with their error."""
    by_plugin: dict[str, PluginFailure] = {}
    for exc in failed.values():
        first = by_plugin.get(exc.plugin)
        by_plugin[exc.plugin] = exc if first is None else PluginFailure(
            exc.plugin, first.n + exc.n, first.error, first.traceback)
    for exc in by_plugin.values():
        outcome.plugin_failures.append(exc)
        if log:
            log(f"{exc}\n{exc.traceback}")
    errors = unfeaturisable(ctx, tasks, failed)
    return {t.spec.key: (t, errors[t.spec.key]) for t in tasks if t.spec.key in errors}


def execute(plan: Plan, ctx: Context, store: Store, setup: WorkerSetup, executor: str = "inline", *,
            workers: int = 1, address: str | None = None, progress: bool | None = None,
            log=None, cache: StageCache | None = None) -> RunOutcome:
    """Run the plan's unfinished jobs with the registered executor ``executor`` (``workers`` at a time;
    ``address``: its cluster, for executors that take one), its workers set up from ``setup``.
    Ctrl-C stops the executor and returns with ``interrupted``: what finished is in the store. With a
    ``cache``, shared stages come from it and go to it (:func:`exchange_with_cache`)."""
    executor_class = ctx.registry.get("executor", executor)
    t0 = time.time()
    from_cache = exchange_with_cache(plan, store, cache, log) if cache is not None else 0
    tasks, reused = plan_tasks(plan, store)
    outcome = RunOutcome(reused=reused, from_cache=from_cache)
    # baselines take seconds: in this process, before any job, so that a run stopped early still has them
    outcome.baselines, outcome.plugin_failures = run_baselines(ctx, plan, store, log)
    bars_off = None if progress is None else not progress
    broken = fail_unfeaturisable(ctx, tasks, featurise(ctx, tasks, bars_off), outcome, log)
    tasks = [t for t in tasks if t.spec.key not in broken]
    bars = Progress(ctx, tasks, bars_off)
    schedule = Schedule(plan, store, tasks, outcome, log, cache)
    for task in broken.values():
        schedule.record(task[0], {"key": task[0].spec.key, "error": task[1]})
    try:
        pool = executor_class(setup, workers=workers, address=address, on_epoch=bars.epoch, context=ctx)
        try:
            schedule.run(pool, bars)
        except KeyboardInterrupt:
            outcome.interrupted = True
        finally:
            pool.shutdown(interrupted=outcome.interrupted)
            pool.poll()
    finally:
        bars.close()
    outcome.wall_s = time.time() - t0
    return outcome
