"""Whether backbones may compile their training step (``Backbone.accelerate``): one setting for the
launcher and every worker, carried by the environment variable ``PARAISITE_BENCH_COMPILE``."""

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
    """The current mode: ``$PARAISITE_BENCH_COMPILE`` or auto."""
    mode = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if mode not in COMPILE_MODES:
        raise UserError(f"{ENV}={mode!r}: expected one of {', '.join(COMPILE_MODES)}")
    return mode


def set_compile_mode(mode: str | None) -> str:
    """Set the mode for this process and the workers it starts (None: keep the environment's)."""
    if mode is not None:
        os.environ[ENV] = mode.lower()
    return compile_mode()


def wants_compile(steps: int, mode: str | None = None) -> bool:
    """Whether a stage of ``steps`` training steps compiles under ``mode`` (None: the environment's)."""
    mode = compile_mode() if mode is None else mode
    return mode == "on" or (mode == "auto" and steps >= COMPILE_MIN_STEPS)
