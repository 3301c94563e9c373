"""``--executor local``: a pool of spawned worker processes on this machine."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import queue
import signal
import threading
import time

from paraisite_bench import worker
from paraisite_bench.executors import Executor


def _start_worker(setup, progress) -> None:
    """A worker process: Ctrl-C is the parent's to handle; epochs are reported through ``progress``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    _exit_with_parent(os.getppid())
    worker.start(setup, lambda key, epoch, total: progress.put((key, epoch, total)))


def _exit_with_parent(parent_pid: int) -> None:
    """A worker whose parent was killed (SIGKILL) exits instead of lingering."""

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class LocalExecutor(Executor):
    """``workers`` spawned processes (each set up once from the set-up), sharing the run directory."""

    name = "local"
    description = "--workers spawned worker processes on this machine (the default with --workers > 1)"

    def __init__(self, setup, **kwargs):
        super().__init__(setup, **kwargs)
        spawn = mp.get_context("spawn")
        self._progress = spawn.Queue()
        self._pool = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=spawn,
                                            initializer=_start_worker, initargs=(setup, self._progress))

    def submit(self, task) -> cf.Future:
        return self._pool.submit(worker.run_task, task)

    def poll(self) -> None:
        try:
            while True:
                self.on_epoch(*self._progress.get_nowait())
        except queue.Empty:
            pass

    def shutdown(self, interrupted: bool = False) -> None:
        if interrupted:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()
        self._pool.shutdown(wait=not interrupted, cancel_futures=True)
