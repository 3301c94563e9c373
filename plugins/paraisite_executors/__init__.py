"""Built-in executors: ``inline`` (this process), ``local`` (spawned worker processes) and ``ray``
(Ray tasks), registered through the ``register_executors`` hook like any plugin's."""

from __future__ import annotations

from paraisite_bench import hookimpl

from .inline import InlineExecutor
from .local import LocalExecutor
from .ray_tasks import RayExecutor


@hookimpl
def register_executors(register):
    register(InlineExecutor)
    register(LocalExecutor)
    register(RayExecutor)
