"""Whether backbones may compile their training step (``Backbone.accelerate``). The mode travels in the
worker set-up (:class:`paraisite_bench.worker.WorkerSetup`) to every worker; the environment variable
``PARAISITE_BENCH_COMPILE`` is only the default, of ``--compile`` and of a stage trained without a mode."""

from __future__ import annotations

import os

from .errors import UserError

ENV = "PARAISITE_BENCH_COMPILE"
#: auto: stages of at least COMPILE_MIN_STEPS training steps; on: every stage; off: never.
COMPILE_MODES = ("auto", "on", "off")
#: Compiling costs seconds to a minute once per worker process (less with inductor's on-disk cache), so
#: short stages (tests, the quick preset) stay eager under "auto". A paper-preset Dataset1 stage has
#: 3,000 steps (300 epochs × 10 batches of 8), an AFLOW stage ~132,000.
COMPILE_MIN_STEPS = 1000


def compile_mode() -> str:
    """The default mode: ``$PARAISITE_BENCH_COMPILE`` or auto."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in COMPILE_MODES:
        raise UserError(f"{ENV}={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


def wants_compile(steps: int, mode: str | None = None) -> bool:
    """Whether a stage of ``steps`` training steps compiles under ``mode`` (None: the default mode)."""
    mode = compile_mode() if mode is None else mode
    return mode == "on" or (mode == "auto" and steps >= COMPILE_MIN_STEPS)
