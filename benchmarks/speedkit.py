"""Helpers for the speed benchmarks: a stage on an AFLOW subsample trained by the plain loop (the
reference), the fast loop eager (compile "off") or compiled (compile "on"), in this process or in N
spawned worker processes at once (the grid's throughput)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import torch

from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.strategy import Init
from paraisite_bench.train import StageSpec, train_stage

#: The reference set-up of the issue: 800 AFLOW training structures (a 1,000-structure subsample,
#: 80/20), MEGNet + ParAIsite head, MAPE loss, one validation pass per epoch.
AFLOW_N = 1000


def context(data_dir, cache_dir, n=AFLOW_N, **protocol) -> Context:
    sub = (("aflow", n),) if n else ()
    return Context(load_registry(), Path(data_dir), Protocol(subsample=sub, **protocol), Path(cache_dir))


def spec(ctx: Context, dataset="aflow", split=0, epochs=2, batch_size=8, init=Init.random()) -> StageSpec:
    opts = dict(ctx.protocol.training_options(dataset), epochs=epochs, batch_size=batch_size)
    return StageSpec(key=f"bench-{split}", backbone="megnet", init=init, parent=None, dataset=dataset,
                     split=split, options=opts, label="bench")


def train_rate(ctx, stage, loop, threads, compile="off") -> dict:
    """Train one stage in this process (compile mode ``compile``: off, the eager fast path; on, compiled);
    training structures per second, validation included (and, when compiled, the compile time in the
    first call of a process)."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    _, summary = train_stage(ctx, stage, None, loop=loop, compile_mode=compile)
    wall = time.perf_counter() - t0
    n = summary["n_train"] * len(summary["curves"])
    return {"wall_s": wall, "structure_epochs": n, "rate": n / wall, "n_train": summary["n_train"],
            "n_val": summary["n_val"], "accelerated": summary["weights_info"].get("accelerated")}


_W: dict = {}


def _init(data_dir, cache_dir, n, threads, compile):
    torch.set_num_threads(threads)
    _W["compile"] = compile
    _W["ctx"] = context(data_dir, cache_dir, n)
    _W["ctx"].features("megnet", "aflow")  # warm: the cache file is already there


def _job(args):
    split, epochs, batch_size, loop = args
    ctx = _W["ctx"]
    t0 = time.perf_counter()
    _, summary = train_stage(ctx, spec(ctx, split=split, epochs=epochs, batch_size=batch_size), None,
                             loop=loop, compile_mode=_W["compile"])
    return (summary["n_train"] * len(summary["curves"]), time.perf_counter() - t0, os.getpid(),
            summary["weights_info"].get("accelerated"))


def grid_rate(data_dir, cache_dir, loop, workers, threads, epochs=2, batch_size=8, n=AFLOW_N,
              compile="off") -> dict:
    """``workers`` processes (``threads`` torch threads each) train one stage each at the same time:
    training structures per second for the whole machine. Start-up, featurisation and (compile "on")
    compilation are excluded: a warm-up stage per worker first, as a grid's later stages find them done."""
    context(data_dir, cache_dir, n).features("megnet", "aflow")  # the cache file exists before the pool
    with mp.get_context("spawn").Pool(workers, _init,
                                      (str(data_dir), str(cache_dir), n, threads, compile)) as pool:
        t0 = time.perf_counter()
        # imports, compile, first steps
        warm = pool.map(_job, [(s, 1, batch_size, loop) for s in range(workers)])
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = pool.map(_job, [(s, epochs, batch_size, loop) for s in range(workers)])
        wall = time.perf_counter() - t0
    total = sum(r[0] for r in res)
    return {"wall_s": wall, "structure_epochs": total, "rate": total / wall, "workers": workers,
            "threads": threads, "pids": len({r[2] for r in res}), "warmup_s": warm_s,
            "accelerated": [r[3] for r in warm + res]}


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
