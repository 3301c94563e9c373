"""Execute a plan: train stages in dependency order (serially or in worker processes), evaluate,
and record everything in the store as soon as each job finishes."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import importlib
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import checkpoint_digest, load_checkpoint, save_checkpoint
from .compilation import compile_mode
from .context import Context
from .errors import UserError
from .jobs import Plan
from .plugins import load_registry
from .protocol import Protocol
from .store import Store
from .userdata import add_datasets
from .train import StageSpec, evaluate, stage_ids, train_stage


@dataclass(frozen=True)
class Task:
    spec: StageSpec
    train: bool
    tests: tuple[str, ...]
    checkpoint: str  # where the stage's checkpoint is (or goes)
    parent_checkpoint: str | None
    parent_checksum: str | None


# ---- worker side ------------------------------------------------------------------------------

_WORKER: dict = {}


def setup_worker_context(data_dir: str, cache_dir: str, protocol: Protocol, plugin_modules: tuple[str, ...],
                         threads: int, device: str = "cpu", loop: str = "fast", extra_datasets=()) -> None:
    """A worker's thread count (set deliberately, never guessed), plugins, context and device."""
    torch.set_num_threads(threads)
    modules = [importlib.import_module(m) for m in plugin_modules]
    registry = load_registry(modules)
    add_datasets(registry, extra_datasets)  # --dataset-file datasets of this run
    _WORKER["ctx"] = Context(registry, Path(data_dir), protocol, Path(cache_dir))
    _WORKER["device"] = device
    _WORKER["loop"] = loop


def init_worker(data_dir: str, cache_dir: str, protocol: Protocol, plugin_modules: tuple[str, ...],
                threads: int, progress_queue=None, device: str = "cpu", loop: str = "fast",
                extra_datasets=()) -> None:
    """Set up a local worker process (see :func:`setup_worker_context`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    _exit_with_parent(os.getppid())
    setup_worker_context(data_dir, cache_dir, protocol, plugin_modules, threads, device, loop, extra_datasets)
    _WORKER["queue"] = progress_queue


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose parent was killed (SIGKILL) exits instead of lingering."""

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_task(task: Task) -> dict:
    ctx: Context = _WORKER["ctx"]
    q = _WORKER.get("queue")
    cb = _WORKER.get("callback")
    device = _WORKER.get("device", "cpu")
    loop = _WORKER.get("loop", "fast")
    out: dict = {"key": task.spec.key}
    try:
        if task.train:
            parent = None
            if task.parent_checkpoint:
                parent = load_checkpoint(Path(task.parent_checkpoint), task.parent_checksum)

            def on_epoch(epoch, total):
                if q is not None:
                    q.put((task.spec.key, epoch, total))
                if cb is not None:
                    cb(task.spec.key, epoch, total)

            payload, summary = train_stage(ctx, task.spec, parent, on_epoch, loop=loop, device=device)
            out["checksum"] = save_checkpoint(Path(task.checkpoint), payload)
            out["summary"] = summary
            ckpt = payload
        else:
            ckpt = load_checkpoint(Path(task.checkpoint))
        out["evals"] = evaluate(ctx, task.spec, ckpt, task.tests, loop=loop, device=device)
    except UserError as exc:
        out["error"] = str(exc)
    except Exception as exc:  # a failing job is reported; the rest of the grid runs
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    return out


class InlineExecutor(cf.Executor):
    """Runs each task in this process at submit time (``--workers 1``)."""

    def submit(self, fn, /, *args, **kwargs):
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except Exception as exc:  # KeyboardInterrupt is no Exception: it reaches the caller
            fut.set_exception(exc)
        return fut


# ---- parent side ------------------------------------------------------------------------------

@dataclass
class RunOutcome:
    trained: int = 0
    evaluated: int = 0
    reused: int = 0
    failed: list = dataclasses.field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0


def plan_tasks(plan: Plan, store: Store) -> tuple[list[Task], int]:
    """The tasks still to do; finished stages (checkpoint present and intact) are reused."""
    tasks, reused = [], 0
    for key, spec in plan.stages.items():
        row = store.stage(key)
        ckpt = store.checkpoint_path(key)
        done = bool(row and row["status"] == "done" and ckpt.exists() and checkpoint_digest(ckpt) == row["checksum"])
        have = store.evals(key) if done else {}
        tests = tuple(t for t in plan.evals.get(key, []) if t not in have)
        if done:
            reused += 1
            if not tests:
                continue
        parent_row = store.stage(spec.parent) if spec.parent else None
        tasks.append(Task(spec, not done, tests, str(ckpt),
                          str(store.checkpoint_path(spec.parent)) if spec.parent else None,
                          parent_row["checksum"] if parent_row else None))
    return tasks, reused


def execute(plan: Plan, ctx: Context, store: Store, workers: int = 1, threads: int = 1,
            plugin_modules: tuple[str, ...] = (), progress: bool | None = None, log=None, *,
            executor: str = "local", address: str | None = None, device: str = "cpu",
            loop: str = "fast", extra_datasets=()) -> RunOutcome:
    """Run the plan's unfinished jobs. ``executor``: "local" (this process for ``workers`` = 1, else
    a pool of spawned worker processes) or "ray" (Ray tasks; a private local instance of ``workers``
    × ``threads`` CPUs unless ``address`` names a cluster). ``device``: "cpu" or "cuda" (resolved).
    ``extra_datasets``: the run's ``--dataset-file`` datasets, registered again in every worker."""
    from tqdm import tqdm

    from .executors import EXECUTORS, RayExecutor

    t0 = time.time()
    tasks, reused = plan_tasks(plan, store)
    outcome = RunOutcome(reused=reused)
    # Featurise every dataset the tasks touch, once, before any job starts (workers read the cache).
    off = (not progress) if progress is not None else None  # None: bars only on a terminal
    needed = {(t.spec.backbone, d) for t in tasks for d in (t.spec.dataset, *t.tests)}
    for b, d in sorted(needed):
        ctx.features(b, d, progress=lambda **kw: tqdm(**kw, leave=False, disable=off))
    # The second bar counts training structures × epochs, so that its ETA weighs a 3,500-structure
    # AFLOW epoch more than a 76-structure Dataset1 epoch.
    per_epoch = {t.spec.key: len(stage_ids(ctx, t.spec)[0]) for t in tasks if t.train}
    job_bar = tqdm(total=len(tasks), desc="jobs", unit="job", disable=off)
    epoch_bar = tqdm(total=sum(per_epoch[t.spec.key] * t.spec.options["epochs"] for t in tasks if t.train),
                     desc="training", unit="structure-epoch", unit_scale=True, disable=off)

    if executor not in EXECUTORS:
        raise UserError(f"--executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    pq = None
    if executor == "ray":
        pool: cf.Executor = RayExecutor(
            dict(data_dir=str(ctx.data_dir), cache_dir=str(ctx.cache_dir), protocol=ctx.protocol,
                 plugin_modules=tuple(plugin_modules), threads=threads, device=device, loop=loop,
                 extra_datasets=tuple(extra_datasets), compile=compile_mode()),
            workers, threads, device, address)
    elif workers <= 1:
        torch.set_num_threads(threads)
        _WORKER.update(ctx=ctx, queue=None, device=device, loop=loop,
                       callback=lambda key, e, n: epoch_bar.update(per_epoch[key]))
        pool = InlineExecutor()
    else:
        mpctx = mp.get_context("spawn")
        pq = mpctx.Queue()
        pool = cf.ProcessPoolExecutor(
            max_workers=workers, mp_context=mpctx, initializer=init_worker,
            initargs=(str(ctx.data_dir), str(ctx.cache_dir), ctx.protocol, tuple(plugin_modules), threads, pq,
                      device, loop, tuple(extra_datasets)))

    # Stages that others build on (e.g. the AFLOW stage of `double`) start first: they are on the critical path.
    has_dependents = {s.parent for s in plan.stages.values() if s.parent}
    pending = sorted(tasks, key=lambda t: t.spec.key not in has_dependents)
    running: dict[cf.Future, Task] = {}
    to_train = {t.spec.key for t in tasks if t.train}
    ready_keys = {k for k in plan.stages if k not in to_train and store.done(k)}
    failed_keys: set[str] = set()

    def drain():
        if pq is None:
            return
        try:
            while True:
                key, _epoch, _total = pq.get_nowait()
                epoch_bar.update(per_epoch[key])
        except queue.Empty:
            pass

    def handle(task: Task, result: dict):
        spec = task.spec
        if "error" in result:
            failed_keys.add(spec.key)
            outcome.failed.append((spec.label, result["error"]))
            store.save_failure(spec.record(), result["error"])
            if log:
                log(f"job {spec.label} failed: {result['error']}" + ("\n" + result.get("traceback", "")))
            return
        if task.train:
            store.save_stage(spec.record(), result["summary"], result["checksum"])
            outcome.trained += 1
        store.save_evals(spec.key, result["evals"])
        outcome.evaluated += len(result["evals"])
        ready_keys.add(spec.key)

    try:
        while pending or running:
            capacity = max(1, workers)
            for task in list(pending):
                if len(running) >= capacity:
                    break
                parent = task.spec.parent
                if parent in failed_keys:
                    pending.remove(task)
                    failed_keys.add(task.spec.key)
                    outcome.failed.append((task.spec.label, "skipped: its previous stage failed"))
                    job_bar.update(1)
                    continue
                if parent is not None and parent not in ready_keys:
                    continue
                pending.remove(task)
                if parent is not None:  # the parent may have been (re)trained in this run
                    task = dataclasses.replace(task, parent_checksum=store.stage(parent)["checksum"])
                running[pool.submit(run_task, task)] = task
            if not running:
                if pending:  # nothing can start: a dependency is missing from the plan
                    raise RuntimeError("job graph stalled: " + ", ".join(t.spec.label for t in pending))
                break
            done, _ = cf.wait(list(running), timeout=0.5, return_when=cf.FIRST_COMPLETED)
            drain()
            for fut in done:
                task = running.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # worker process died
                    result = {"key": task.spec.key, "error": f"worker died: {type(exc).__name__}: {exc}"}
                handle(task, result)
                if executor == "ray" and task.train:  # Ray jobs report no per-epoch progress
                    epoch_bar.update(per_epoch[task.spec.key] * task.spec.options["epochs"])
                job_bar.update(1)
                job_bar.set_postfix_str(task.spec.label[-40:])
    except KeyboardInterrupt:
        outcome.interrupted = True
        if isinstance(pool, cf.ProcessPoolExecutor):
            for p in list(getattr(pool, "_processes", {}).values()):
                p.terminate()
    finally:
        pool.shutdown(wait=not outcome.interrupted, cancel_futures=True)
        drain()
        job_bar.close()
        epoch_bar.close()
        _WORKER.pop("callback", None)
        _WORKER.pop("device", None)
        _WORKER.pop("loop", None)
    outcome.wall_s = time.time() - t0
    return outcome
