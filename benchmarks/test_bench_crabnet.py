"""CrabNet benchmarks: one training epoch on Dataset1 (batch 8) and on expt_gap (batch 256), at the
default size (d_model 128) unless PARAISITE_BENCH_CRABNET says otherwise; formulas/s in extra_info;
and the pre-padded batcher against collate per step (the code before it), both measured in one run.

Run: ``make benchmark`` (or ``pytest benchmarks/test_bench_crabnet.py --benchmark-only``)."""

from __future__ import annotations

import dataclasses
import time
import types

import pytest
import torch

from paraisite_bench import train
from paraisite_bench.backbone import Backbone
from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.strategy import Init
from paraisite_bench.train import StageSpec, train_stage


@pytest.mark.parametrize("dataset, batch", [("dataset1", 8), ("expt_gap", 256)])
def test_crabnet_train_epoch(benchmark, data_dir, tmp_path, dataset, batch):
    torch.set_num_threads(1)
    protocol = dataclasses.replace(Protocol(epochs=1), stage_options=((dataset, (("batch_size", batch),)),))
    ctx = Context(load_registry(), data_dir, protocol, tmp_path)
    ctx.features("crabnet", dataset)
    spec = StageSpec(key="bench", backbone="crabnet", init=Init.random(), parent=None, dataset=dataset,
                     split=0, options=protocol.training_options(dataset), label="bench")
    rounds = 3 if dataset == "dataset1" else 1
    _, summary = benchmark.pedantic(lambda: train_stage(ctx, spec, None), rounds=rounds, iterations=1)
    benchmark.extra_info["train_formulas_per_s_incl_validation"] = (
        summary["n_train"] / benchmark.stats.stats.mean)
    benchmark.extra_info["settings"] = ctx.backbone("crabnet").settings()


ROUNDS = 3
#: epochs of the timed stage: Dataset1's as in the quick preset (15), so that per-epoch costs weigh as
#: in a run; one for expt_gap (15 steps of 256)
EPOCHS = {"dataset1": 15, "expt_gap": 1}


def _fresh_copy(model, into=None):
    """How stages copied their best weights before: fresh tensors at every better epoch."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _epoch_batches(make_batch, n: int, batch: int) -> float:
    """Seconds to build one epoch's training batches in a shuffled order."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        make_batch(order[i:i + batch])
    return time.perf_counter() - t0


@pytest.mark.parametrize("dataset, batch", [("dataset1", 8), ("expt_gap", 256)])
def test_crabnet_stage_before_vs_now(benchmark, data_dir, tmp_path, figures, dataset, batch):
    """The code before (collate per step: ``Backbone.batcher``'s default; the best weights copied into
    fresh tensors) against the current (pre-padded batcher; best weights copied in place), interleaved
    over 3 rounds, best kept: building one epoch's shuffled training batches, and one training stage of
    ``EPOCHS`` epochs (model build and validation included), 1 thread."""
    torch.set_num_threads(1)
    protocol = dataclasses.replace(Protocol(epochs=EPOCHS[dataset]),
                                   stage_options=((dataset, (("batch_size", batch),)),))
    ctx = Context(load_registry(), data_dir, protocol, tmp_path)
    feats = list(ctx.features("crabnet", dataset).values())
    bb = ctx.backbone("crabnet")
    spec = StageSpec(key="bench", backbone="crabnet", init=Init.random(), parent=None, dataset=dataset,
                     split=0, options=protocol.training_options(dataset), label="bench")
    times: dict = {k: [] for k in ("collate_batches", "batcher_batches", "old_stage", "new_stage")}

    def run():
        for _ in range(ROUNDS):
            times["collate_batches"].append(_epoch_batches(Backbone.batcher(bb, feats), len(feats), batch))
            times["batcher_batches"].append(_epoch_batches(bb.batcher(feats), len(feats), batch))
            bb.batcher = types.MethodType(Backbone.batcher, bb)  # this instance only: the old path
            current_copy, train._state_copy = train._state_copy, _fresh_copy
            try:
                t0 = time.perf_counter()
                train_stage(ctx, spec, None)
                times["old_stage"].append(time.perf_counter() - t0)
            finally:
                del bb.batcher
                train._state_copy = current_copy
            t0 = time.perf_counter()
            train_stage(ctx, spec, None)
            times["new_stage"].append(time.perf_counter() - t0)

    benchmark.pedantic(run, rounds=1, iterations=1)
    best = {k: min(v) for k, v in times.items()}
    best["batches_speedup"] = best["collate_batches"] / best["batcher_batches"]
    best["stage_speedup"] = best["old_stage"] / best["new_stage"]
    best["records"] = len(feats)
    figures.setdefault("crabnet", {})[f"{dataset}-b{batch}"] = best
    benchmark.extra_info.update(best)
    print(f"  crabnet {dataset} batch {batch}: " + ", ".join(f"{k} {v:.4g}" for k, v in best.items()))
