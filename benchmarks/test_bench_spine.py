"""Spine benchmarks: featurisation and one MEGNet training epoch on Dataset1 (structures/s in extra_info).

Run: ``make benchmark`` (or ``pytest benchmarks --benchmark-only``)."""

from __future__ import annotations

import torch

from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.strategy import Init
from paraisite_bench.train import StageSpec, train_stage


def _ctx(data_dir, tmp_path):
    return Context(load_registry(), data_dir, Protocol(), tmp_path)


def test_featurise_dataset1(benchmark, data_dir, tmp_path):
    ctx = _ctx(data_dir, tmp_path)
    bb = ctx.backbone("megnet")
    records = list(ctx.dataset("dataset1").records.values())
    [r.structure for r in records]  # CIF parsing is not part of graph building
    benchmark.pedantic(lambda: [bb.featurise(r) for r in records], rounds=3, iterations=1)
    benchmark.extra_info["structures_per_s"] = len(records) / benchmark.stats.stats.mean


def test_train_epoch_dataset1_batch8(benchmark, data_dir, tmp_path):
    torch.set_num_threads(1)
    ctx = _ctx(data_dir, tmp_path)
    ctx.features("megnet", "dataset1")
    options = Protocol(epochs=1).training_options("dataset1")
    spec = StageSpec(key="bench", backbone="megnet", init=Init.random(), parent=None, dataset="dataset1",
                     split=0, options=options, label="bench")
    _, summary = benchmark.pedantic(lambda: train_stage(ctx, spec, None), rounds=5, iterations=1)
    benchmark.extra_info["train_structures_per_s_incl_validation"] = (
        summary["n_train"] / benchmark.stats.stats.mean)
