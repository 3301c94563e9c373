"""Where jobs run (the executor contract) and on which device.

Executors are plugins: a class derived from :class:`Executor`, registered by name through the
``register_executors`` hook (see :mod:`paraisite_bench.hookspecs`). The built-ins (``inline``, ``local``
and ``ray``) come from the ``paraisite_executors`` plugin package like any third party's. Whatever the
executor, the scheduling, the dependencies and the store stay in :func:`paraisite_bench.runner.execute`
on the launching machine; an executor only runs the tasks it is given.
"""

from __future__ import annotations

import concurrent.futures as cf
from typing import Callable, ClassVar

import torch

from .errors import UserError

DEVICES = ("auto", "cpu", "cuda")

#: ``on_epoch(stage_key, epoch, total_epochs)``: a training stage finished an epoch.
EpochCallback = Callable[[str, int, int], None]


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` if torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is a user error."""
    name = (name or "auto").lower()
    if name not in DEVICES:
        raise UserError(f"--device {name!r}: expected one of {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise UserError(f"--device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU on this "
                        "machine: use --device cpu (or auto)")
    return name


class Executor:
    """Runs tasks somewhere: the contract between the runner and an executor.

    **Construction.** ``Executor(setup, workers=N, address=A, on_epoch=F, context=C)`` is called once per
    command, after every dataset the tasks touch has been featurised into the feature cache.
    ``setup`` (:class:`paraisite_bench.worker.WorkerSetup`) is everything a worker needs: data and
    cache directories, protocol, plugin modules to import, the run's ``--dataset-file`` datasets,
    torch threads, device, compile mode and training loop. A worker is set up with
    ``worker.start(setup, on_epoch)`` before its first task (once per worker process). ``workers``
    is how many tasks may run at once: the runner never has more than that many submitted and
    unfinished. ``address`` is the ``--address`` option (None unless :attr:`takes_address`).
    ``context`` is the launcher's own :class:`paraisite_bench.context.Context`; an executor that runs
    tasks in the launching process may pass it to ``worker.start`` to reuse its loaded datasets.

    **A task** (:class:`paraisite_bench.worker.Task`) is one stage: its spec, whether to train it
    (else it was trained before and is only evaluated), the test datasets to evaluate it on, and paths:
    ``checkpoint`` (where the trained checkpoint goes, or where the stored one is) and
    ``parent_checkpoint`` (the previous stage's, verified against ``parent_checksum``).

    **Running it.** ``submit(task)`` returns a :class:`concurrent.futures.Future` whose result is
    ``worker.run_task(task)`` as run by a worker: a dict with ``key`` and either ``checksum``,
    ``summary`` (training) and ``evals`` (evaluations), or ``error`` (one line, plus ``traceback`` for
    an unexpected exception). A job that fails is a result with ``error``, not an exception; a future
    that raises means the worker itself died, and the runner reports the job as failed.

    **Checkpoints** are files. The runner reads and writes them at the paths in the task, in the run
    directory on the launching machine. An executor whose workers do not share that filesystem
    (:attr:`remote`) ships the parent's (or the stored) checkpoint to the worker and the trained one
    back, and writes it at ``task.checkpoint`` before the future completes.

    **Progress.** ``on_epoch(key, epoch, total)`` is called on the runner's thread: either directly
    by a task that runs in this thread, or from :meth:`poll`, which the runner calls between waits
    and which delivers what the workers reported since. An executor that cannot see epochs reports
    all of a trained stage's epochs at once when it finishes.

    **Shutdown and cancel.** ``shutdown(interrupted)`` is called exactly once, last. After a normal
    end every submitted task has finished: release the workers. ``interrupted`` (Ctrl-C in the
    launcher) means stop now: cancel what is queued and end the running tasks without waiting; the
    runner records nothing more, and the next command resumes from the store.
    """

    #: The ``--executor`` name.
    name: ClassVar[str] = ""
    #: One line for ``paraisite-bench plugins``.
    description: ClassVar[str] = ""
    #: Whether ``--address`` means something to this executor.
    takes_address: ClassVar[bool] = False
    #: Whether workers may run on other machines: the device is then resolved on each worker, and
    #: checkpoints travel with the tasks.
    remote: ClassVar[bool] = False

    def __init__(self, setup, *, workers: int = 1, address: str | None = None,
                 on_epoch: EpochCallback | None = None, context=None):
        self.setup = setup
        self.workers = max(1, workers)
        self.address = address
        self.on_epoch: EpochCallback = on_epoch or (lambda key, epoch, total: None)
        self.context = context

    def submit(self, task) -> cf.Future:
        raise NotImplementedError(f"executor {self.name!r} does not implement submit(task)")

    def poll(self) -> None:
        """Deliver the progress reported by workers since the last call (see the class docstring)."""

    def shutdown(self, interrupted: bool = False) -> None:
        """Release the workers; ``interrupted``: stop running and queued tasks without waiting."""
