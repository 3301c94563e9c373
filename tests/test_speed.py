"""The fast training path gives the plain per-batch loop's results (same batches, same order, same
seeds), and the MEGNet index-based batcher builds exactly the batch PyG's collation builds."""

from __future__ import annotations

import pytest
import torch

from paraisite_bench.backbone import Backbone
from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.strategy import Init
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


def _outputs_and_grads(model, batch, dtype=torch.float32):
    batch.pos, batch.pbc_offshift = batch.pos.to(dtype), batch.pbc_offshift.to(dtype)
    if batch.state_attr.is_floating_point():
        batch.state_attr = batch.state_attr.to(dtype)
    model.zero_grad(set_to_none=True)
    out = model(batch)
    out.sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("backbone, init", [("megnet", Init.random()), ("megnet", Init.weights("eform")),
                                            ("megnet_bandgap", Init.weights("bandgap"))])
def test_fast_megnet_forward_is_matgl_forward(ctx, backbone, init):
    """The fast path (GraphBatch: split first layer, own Set2Set, ...) computes matgl's function on the
    same parameters. In float64 outputs and every gradient agree to 1e-9 (the same function); in
    float32 the outputs agree to float rounding (gradients differ by summation order only, up to
    ~1e-4 of their scale where contributions cancel, e.g. the band gap model's state encoder)."""
    from paraisite_bench.train import build_model

    torch.set_num_threads(1)
    bb = ctx.backbone(backbone)
    feats = list(ctx.features(backbone, "aflow").values())
    spec = StageSpec(key="f", backbone=backbone, init=init, parent=None, dataset="aflow", split=0,
                     options=ctx.protocol.training_options("aflow"), label="f")
    model, _ = build_model(ctx, spec, None)
    assert model.backbone.fast
    batcher = bb.batcher(feats)
    for idx in ([0, 1, 2, 3, 4, 5, 6, 7], [9], list(range(10, 50))):
        ref_out, _ = _outputs_and_grads(model, bb.collate([feats[i] for i in idx]))
        out, _ = _outputs_and_grads(model, batcher(idx))
        assert out.shape == ref_out.shape == (len(idx),)
        assert torch.allclose(out, ref_out, rtol=1e-5, atol=1e-6)
        with torch.no_grad():
            e_ref = model.backbone.energy(bb.collate([feats[i] for i in idx]))
            assert torch.allclose(model.backbone.energy(batcher(idx)), e_ref, rtol=1e-5, atol=1e-5)
    model.double()
    for idx in ([0, 1, 2, 3, 4, 5, 6, 7], [9], list(range(10, 50))):
        ref_out, ref_grads = _outputs_and_grads(model, bb.collate([feats[i] for i in idx]), torch.float64)
        out, grads = _outputs_and_grads(model, batcher(idx), torch.float64)
        assert torch.allclose(out, ref_out, rtol=1e-10, atol=1e-12)
        assert grads.keys() == ref_grads.keys() and len(grads) > 90
        for name, g in grads.items():
            assert torch.allclose(g, ref_grads[name], rtol=1e-9,
                                  atol=1e-9 * ref_grads[name].abs().max()), name
    # a perturbed parameter changes the fast output: the path really reads the model's weights
    model.float()
    with torch.no_grad():
        before = model.backbone(batcher([0, 1]))
        model.backbone.megnet.blocks[1].conv.edge_func.layers[0].weight[:, 40] += 0.5
        assert not torch.allclose(model.backbone(batcher([0, 1])), before)


def test_default_batcher_uses_collate():
    class Toy(Backbone):
        def collate(self, features):
            return torch.stack(list(features))

    feats = [torch.full((2,), float(i)) for i in range(5)]
    assert torch.equal(Toy().batcher(feats)([4, 1]), torch.stack([feats[4], feats[1]]))


@pytest.mark.parametrize("dataset, init, compile_mode", [("dataset1", Init.random(), "auto"),
                                                         ("aflow", Init.weights("eform"), "off"),
                                                         ("aflow", Init.weights("eform"), "on")])
def test_fast_loop_gives_the_plain_loop_results(ctx, dataset, init, compile_mode, monkeypatch):
    """Fast loop (eager; and compiled with PARAISITE_BENCH_COMPILE=on) vs the plain loop: same curves,
    selected epoch, test MAPEs and weights to float rounding."""
    torch.set_num_threads(1)
    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", compile_mode)
    spec = StageSpec(key="eq", backbone="megnet", init=init, parent=None, dataset=dataset, split=0,
                     options=ctx.protocol.training_options(dataset), label="eq")
    out = {}
    for loop in ("plain", "fast"):
        payload, summary = train_stage(ctx, spec, None, loop=loop)
        out[loop] = (payload, summary, evaluate(ctx, spec, payload, ["dataset1", "aflow"], loop=loop))
    (p_pay, p_sum, p_ev), (f_pay, f_sum, f_ev) = out["plain"], out["fast"]
    assert "accelerated" not in p_sum["weights_info"]  # the plain loop (the reference) never compiles
    # "auto" compiles stages of ≥ 1,000 steps only: these have 4 epochs of ≤ 10 batches
    assert f_sum["weights_info"].get("accelerated", "").startswith("torch.compile") == (compile_mode == "on")
    assert f_sum["best_epoch"] == p_sum["best_epoch"]
    assert len(f_sum["curves"]) == len(p_sum["curves"]) == 4
    for a, b in zip(p_sum["curves"], f_sum["curves"]):
        assert b["train_mape"] == pytest.approx(a["train_mape"], rel=1e-4)
        assert b["val_mape"] == pytest.approx(a["val_mape"], rel=1e-4)
        assert b["lr"] == a["lr"]
    assert len(p_ev) == len(f_ev) == 2 * 2  # two tests, each read at the selected and at the last epoch
    for a, b in zip(p_ev, f_ev):
        assert (a["test"], a["selection"], a["n_test"]) == (b["test"], b["selection"], b["n_test"])
        assert b["metrics"]["mape"] == pytest.approx(a["metrics"]["mape"], rel=1e-4)
    for k, v in p_pay["model"].items():
        assert torch.allclose(v, f_pay["model"][k], rtol=1e-3, atol=1e-5), k


def test_a_failing_compile_trains_eagerly(ctx, monkeypatch, capsys):
    """No C++ compiler, an inductor bug...: one line on stderr, the stage trains without compiling."""
    import paraisite_megnet.fast as fast

    def broken():
        def fn(*args):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found\nmore detail")
        return fn

    monkeypatch.setattr(fast, "compiled", broken)
    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", "on")
    spec = StageSpec(key="nc", backbone="megnet", init=Init.random(), parent=None, dataset="dataset1",
                     split=0, options=dict(ctx.protocol.training_options("dataset1"), epochs=2), label="nc")
    payload, summary = train_stage(ctx, spec, None)
    err = capsys.readouterr().err
    assert "torch.compile failed (RuntimeError: InvalidCxxCompiler: No working C++ compiler found)" in err
    assert "more detail" not in err and err.count("\n") == 1
    assert "accelerated" not in summary["weights_info"] and len(summary["curves"]) == 2


def test_compile_mode_is_checked(monkeypatch):
    from paraisite_bench.compilation import compile_mode, wants_compile
    from paraisite_bench.errors import UserError

    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", "Auto")
    assert compile_mode() == "auto" and wants_compile(1000) and not wants_compile(999)
    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", "off")
    assert not wants_compile(10 ** 6)
    monkeypatch.setenv("PARAISITE_BENCH_COMPILE", "yes")
    with pytest.raises(UserError, match="PARAISITE_BENCH_COMPILE='yes': expected one of auto, on, off"):
        compile_mode()


def test_the_fast_loop_flushes_denormals_during_its_stage_only(ctx):
    """Fine-tuning from published weights makes denormal floats (~100× slower on x86); the fast loop
    flushes them to zero while it trains and restores the default after."""
    tiny = torch.tensor([1e-39])  # a denormal float32
    seen = []
    spec = StageSpec(key="ftz", backbone="megnet", init=Init.random(), parent=None, dataset="dataset1",
                     split=0, options=dict(ctx.protocol.training_options("dataset1"), epochs=2), label="ftz")
    train_stage(ctx, spec, None, on_epoch=lambda e, n: seen.append(float(tiny * 1.0)))
    assert seen == [0.0, 0.0]
    assert float(tiny * 1.0) > 0  # restored
    seen.clear()
    train_stage(ctx, spec, None, on_epoch=lambda e, n: seen.append(float(tiny * 1.0)), loop="plain")
    assert seen and all(v > 0 for v in seen)  # the plain loop (the reference) never flushes
