"""``--executor inline``: each task runs in the launching process when it is submitted."""

from __future__ import annotations

import concurrent.futures as cf

from paraisite_bench import worker
from paraisite_bench.executors import Executor


class InlineExecutor(Executor):
    """One task at a time in this process, sharing the launcher's loaded datasets and features."""

    name = "inline"
    description = "this process, one job at a time (the default with --workers 1)"

    def __init__(self, setup, **kwargs):
        super().__init__(setup, **kwargs)
        self.workers = 1
        worker.start(setup, self.on_epoch, context=self.context)

    def submit(self, task) -> cf.Future:
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(worker.run_task(task))
        except Exception as exc:  # KeyboardInterrupt is no Exception: it reaches the runner
            fut.set_exception(exc)
        return fut

    def shutdown(self, interrupted: bool = False) -> None:
        worker.stop()
