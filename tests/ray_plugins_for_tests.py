"""A backbone for the Ray cluster tests (``--plugin ray_plugins_for_tests``): MEGNet whose model, when
built on a node whose environment names ``PB_SLEEPY_DIR``, writes the building process's PID to
``$PB_SLEEPY_DIR/pid`` and waits (at most 120 s) for ``$PB_SLEEPY_DIR/release``, so that a test can kill
the Ray worker in the middle of the task. Without the variable (the launcher) it is plain MEGNet."""

from __future__ import annotations

import os
import time
from pathlib import Path

from paraisite_megnet import MEGNetBackbone

from paraisite_bench import hookimpl


class SleepyBackbone(MEGNetBackbone):
    name = "sleepy"

    def build(self):
        where = os.environ.get("PB_SLEEPY_DIR")
        if where:
            (Path(where) / "pid").write_text(str(os.getpid()))
            deadline = time.time() + 120
            while not (Path(where) / "release").exists() and time.time() < deadline:
                time.sleep(0.1)
        return super().build()


@hookimpl
def register_backbones(register):
    register(SleepyBackbone)
