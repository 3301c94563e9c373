"""The fast training path gives the plain per-batch loop's results (same batches, same order, same
seeds), and the MEGNet index-based batcher builds exactly the batch PyG's collation builds."""

from __future__ import annotations

import pytest
import torch

from paraisite_bench.backbone import Backbone
from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.train import StageSpec, evaluate, train_stage


@pytest.fixture(scope="module")
def ctx(data_dir, cache_dir):
    return Context(load_registry(), data_dir, Protocol(epochs=4, subsample=(("aflow", 60),)), cache_dir)


def test_megnet_batcher_builds_the_pyg_batch(ctx):
    bb = ctx.backbone("megnet")
    feats = list(ctx.features("megnet", "dataset1").values())
    batcher = bb.batcher(feats)
    for idx in ([3, 0, 50, 7, 7, 94, 12, 1], [5], list(range(len(feats)))[::-1]):
        ref = bb.collate([feats[i] for i in idx])
        got = batcher(idx)
        assert got.num_graphs == ref.num_graphs == len(idx)
        for name in ("node_type", "pos", "edge_index", "pbc_offshift", "state_attr", "batch"):
            a, b = getattr(ref, name), getattr(got, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
    model = bb.build().eval()
    with torch.no_grad():
        assert torch.equal(model(bb.collate(feats[:8])), model(batcher(range(8))))


def test_default_batcher_uses_collate():
    class Toy(Backbone):
        def collate(self, features):
            return torch.stack(list(features))

    feats = [torch.full((2,), float(i)) for i in range(5)]
    assert torch.equal(Toy().batcher(feats)([4, 1]), torch.stack([feats[4], feats[1]]))


@pytest.mark.parametrize("dataset, init", [("dataset1", "random"), ("aflow", "weights:eform")])
def test_fast_loop_gives_the_plain_loop_results(ctx, dataset, init):
    torch.set_num_threads(1)
    spec = StageSpec(key="eq", backbone="megnet", init=init, parent=None, dataset=dataset, split=0,
                     options=ctx.protocol.training_options(dataset), label="eq")
    out = {}
    for loop in ("plain", "fast"):
        payload, summary = train_stage(ctx, spec, None, loop=loop)
        out[loop] = (payload, summary, evaluate(ctx, spec, payload, ["dataset1", "aflow"], loop=loop))
    (p_pay, p_sum, p_ev), (f_pay, f_sum, f_ev) = out["plain"], out["fast"]
    assert f_sum["best_epoch"] == p_sum["best_epoch"]
    assert len(f_sum["curves"]) == len(p_sum["curves"]) == 4
    for a, b in zip(p_sum["curves"], f_sum["curves"]):
        assert b["train_mape"] == pytest.approx(a["train_mape"], rel=1e-4)
        assert b["val_mape"] == pytest.approx(a["val_mape"], rel=1e-4)
        assert b["lr"] == a["lr"]
    for a, b in zip(p_ev, f_ev):
        assert (a["test"], a["n_test"]) == (b["test"], b["n_test"])
        assert b["mape"] == pytest.approx(a["mape"], rel=1e-4)
    for k, v in p_pay["model"].items():
        assert torch.allclose(v, f_pay["model"][k], rtol=1e-3, atol=1e-5), k
