"""A worker: what it is given (:class:`WorkerSetup`), what it runs (:class:`Task`) and the state it keeps
between tasks (its plugins, context, device and progress callback), behind :func:`start` and
:func:`run_task`. Every executor sets up its workers through :func:`start`, in whatever process runs them."""

from __future__ import annotations

import importlib
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .context import Context
from .data import DatasetSpec
from .errors import PluginFailure, UserError
from .executors import EpochCallback
from .plugins import load_registry
from .protocol import Protocol
from .train import StageSpec, evaluate, train_stage
from .userdata import add_datasets


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs, built once by the launcher and handed to every executor."""

    data_dir: Path
    cache_dir: Path
    protocol: Protocol
    #: importable plugin modules loaded besides the entry points (``--plugin``)
    plugin_modules: tuple[str, ...] = ()
    #: the run's own datasets (``--dataset-file``), registered again in every worker
    datasets: tuple[DatasetSpec, ...] = ()
    #: torch threads per worker (set deliberately, never guessed)
    threads: int = 1
    #: "cpu" or "cuda"; "auto" only for executors that resolve it on the worker's machine
    device: str = "cpu"
    #: see :mod:`paraisite_bench.compilation`
    compile_mode: str = "auto"
    #: see :data:`paraisite_bench.train.LOOPS`
    loop: str = "fast"


@dataclass(frozen=True)
class Task:
    """One stage to train (``train``) and/or evaluate on ``tests``."""

    spec: StageSpec
    train: bool
    tests: tuple[str, ...]
    checkpoint: str  # where the stage's checkpoint is (or goes)
    parent_checkpoint: str | None
    parent_checksum: str | None


@dataclass(frozen=True)
class _State:
    setup: WorkerSetup
    ctx: Context
    on_epoch: EpochCallback | None


_state: _State | None = None


def context_for(setup: WorkerSetup) -> Context:
    """The context a worker builds from its set-up: the plugins, the run's datasets, the protocol."""
    registry = load_registry([importlib.import_module(m) for m in setup.plugin_modules])
    add_datasets(registry, setup.datasets)
    return Context(registry, Path(setup.data_dir), setup.protocol, Path(setup.cache_dir))


def start(setup: WorkerSetup, on_epoch: EpochCallback | None = None, context: Context | None = None) -> None:
    """Set up this process's worker (again, if it ran another set-up before). ``context``: reuse the
    launcher's own context (a worker in the launching process); else one is built from ``setup``."""
    global _state
    torch.set_num_threads(setup.threads)
    _state = _State(setup, context if context is not None else context_for(setup), on_epoch)


def current_setup() -> WorkerSetup | None:
    """The set-up this process's worker was started with (None: not started)."""
    return _state.setup if _state is not None else None


def stop() -> None:
    """Forget this process's worker state (its context, loaded datasets and features)."""
    global _state
    _state = None


def run_task(task: Task) -> dict:
    """Run one task in this process's worker. A failure is a result with ``error``, never an exception
    (so that the rest of the grid runs); see :class:`paraisite_bench.executors.Executor`."""
    if _state is None:
        raise RuntimeError("worker.run_task before worker.start")
    out: dict = {"key": task.spec.key}
    try:
        if task.train:
            ckpt = _train(_state, task, out)
        else:
            ckpt = load_checkpoint(Path(task.checkpoint))
        out["evals"] = evaluate(_state.ctx, task.spec, ckpt, task.tests, loop=_state.setup.loop,
                                device=_state.setup.device)
    except UserError as exc:
        out["error"] = str(exc)
    except PluginFailure as exc:  # a plugin's bug, never cached: a fixed plugin runs again
        out["error"], out["traceback"] = str(exc), exc.traceback
    except Exception as exc:  # a failing job is reported; the rest of the grid runs
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    return out


def _train(state: _State, task: Task, out: dict) -> dict:
    """Train the task's stage, save its checkpoint, put checksum and summary in ``out``; the payload."""
    parent = None
    if task.parent_checkpoint:
        parent = load_checkpoint(Path(task.parent_checkpoint), task.parent_checksum)
    key = task.spec.key
    on_epoch = None if state.on_epoch is None else (lambda epoch, total: state.on_epoch(key, epoch, total))
    setup = state.setup
    payload, summary = train_stage(state.ctx, task.spec, parent, on_epoch, loop=setup.loop,
                                   device=setup.device, compile_mode=setup.compile_mode)
    out["checksum"] = save_checkpoint(Path(task.checkpoint), payload)
    out["summary"] = summary
    return payload
