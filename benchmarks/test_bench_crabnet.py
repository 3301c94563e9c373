"""CrabNet benchmarks: one training epoch on Dataset1 (batch 8) and on expt_gap (batch 256), at the
default size (d_model 128) unless PARAISITE_BENCH_CRABNET says otherwise; formulas/s in extra_info.

Run: ``make benchmark`` (or ``pytest benchmarks/test_bench_crabnet.py --benchmark-only``)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.strategy import Init
from paraisite_bench.train import StageSpec, train_stage


@pytest.mark.parametrize("dataset, batch", [("dataset1", 8), ("expt_gap", 256)])
def test_crabnet_train_epoch(benchmark, data_dir, tmp_path, dataset, batch):
    torch.set_num_threads(1)
    protocol = dataclasses.replace(Protocol(epochs=1), stage_batch_size=((dataset, batch),))
    ctx = Context(load_registry(), data_dir, protocol, tmp_path)
    ctx.features("crabnet", dataset)
    spec = StageSpec(key="bench", backbone="crabnet", init=Init.random(), parent=None, dataset=dataset,
                     split=0, options=protocol.training_options(dataset), label="bench")
    rounds = 3 if dataset == "dataset1" else 1
    _, summary = benchmark.pedantic(lambda: train_stage(ctx, spec, None), rounds=rounds, iterations=1)
    benchmark.extra_info["train_formulas_per_s_incl_validation"] = (
        summary["n_train"] / benchmark.stats.stats.mean)
    benchmark.extra_info["settings"] = ctx.backbone("crabnet").settings()
