"""A third party's executor, loaded with ``--plugin executor_plugin_for_tests``: this one file is all it
takes to add one. It runs every task on a background thread of the launching process and remembers
what it ran, so that a test can tell it was used."""

from __future__ import annotations

import concurrent.futures as cf
import threading

from paraisite_bench import hookimpl, worker
from paraisite_bench.executors import Executor

#: (stage key, whether it trained, name of the thread that ran it), in the order the tasks ran
RAN: list[tuple[str, bool, str]] = []


def _run(task):
    RAN.append((task.spec.key, task.train, threading.current_thread().name))
    return worker.run_task(task)


class BackgroundThreadExecutor(Executor):
    name = "background-thread"
    description = "one background thread of this process (a test plugin)"

    def __init__(self, setup, **kwargs):
        super().__init__(setup, **kwargs)
        worker.start(setup)  # a context of its own, built from the set-up as any worker's
        self.pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-thread")

    def submit(self, task):
        return self.pool.submit(_run, task)

    def shutdown(self, interrupted=False):
        self.pool.shutdown(wait=not interrupted, cancel_futures=True)
        worker.stop()


@hookimpl
def register_executors(register):
    register(BackgroundThreadExecutor)
