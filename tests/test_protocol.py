"""Splits, target kinds (transform, loss, metric) and self-describing checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paraisite_bench.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from paraisite_bench.context import Context
from paraisite_bench.errors import UserError
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol, SplitOptions, with_training_seed
from paraisite_bench.strategy import Init
from paraisite_bench.targets import KAPPA_KIND, REGRESSION_KIND, LogStandardTransform, mape, target_kind
from paraisite_bench.train import StageSpec, build_model, evaluate, predict, train_stage

#: The split options of a stage on Dataset1 under the default protocol.
OPTS = Protocol().training_options("dataset1")


@pytest.fixture(scope="module")
def ctx(data_dir, tmp_path_factory):
    return Context(load_registry(), data_dir, Protocol(), tmp_path_factory.mktemp("c"))


def test_splits_are_80_20_disjoint_nested_and_reproducible(ctx, data_dir):
    ids = set(ctx.dataset("dataset1").records)
    assert len(ids) == 95
    seen_tests = []
    for r in range(9):
        s = ctx.split("dataset1", r, OPTS)
        assert set(s.train).isdisjoint(s.test)
        assert set(s.train) | set(s.test) == ids
        assert len(s.test) == 19
        assert set(s.inner_train) | set(s.inner_val) == set(s.train)
        assert set(s.inner_train).isdisjoint(s.inner_val)
        seen_tests.append(s.test)
    assert len(set(seen_tests)) == 9  # nine different validation sets
    again = Context(load_registry(), data_dir, Protocol(), ctx.cache_dir)
    assert again.split("dataset1", 3, OPTS) == ctx.split("dataset1", 3, OPTS)
    other_seed = Protocol(seed=7).training_options("dataset1")
    assert ctx.split("dataset1", 3, other_seed).test != ctx.split("dataset1", 3, OPTS).test


def test_mix_split_is_the_union_of_its_components(ctx):
    for r in range(3):
        mix, d1, d2 = (ctx.split(name, r, OPTS) for name in ("mix", "dataset1", "dataset2"))
        assert set(mix.test) == set(d1.test) | set(d2.test)
        assert set(mix.train) == set(d1.train) | set(d2.train)
        # no MIX training record is in Dataset1's or Dataset2's test part of the same split
        assert set(mix.train).isdisjoint(set(d1.test) | set(d2.test))


def test_target_transform_round_trip():
    kappa = np.array([0.51, 2.17, 34.5, 1769.0])
    t = LogStandardTransform.fit(kappa)
    y = t.forward(kappa)
    assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9
    np.testing.assert_allclose(t.inverse(y), kappa, rtol=1e-10)
    yt = t.forward(torch.tensor(kappa, dtype=torch.float64))
    np.testing.assert_allclose(t.inverse(yt).numpy(), kappa, rtol=1e-6)


def test_mape_is_a_fraction_on_kappa():
    assert mape([2.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert mape([110.0], [100.0]) == pytest.approx(0.1)


@pytest.mark.parametrize("y, direction", [(-40.0, -1), (40.0, 1), (0.3, 1)])
def test_mape_loss_gradient_never_vanishes(y, direction):
    """A model predicting far below (κ → −1) or above the range still gets a gradient pointing back."""
    t = LogStandardTransform(mean=0.5, std=0.4)
    pred = torch.tensor([y], requires_grad=True)
    true = torch.tensor([1.0])  # standardised ≈ -0.5
    loss = torch.mean(torch.abs(t.inverse(pred) - true) / true)
    loss.backward()
    assert pred.grad.item() * direction > 0.1


def test_predictions_are_physical():
    t = LogStandardTransform(mean=0.5, std=0.4)
    assert t.inverse(np.array([-40.0]))[0] == 0.0
    assert t.inverse(torch.tensor([-40.0])).item() == 0.0
    assert t.inverse(np.array([40.0]))[0] == pytest.approx(1e8 - 1)


# ---- splits follow the options passed, not the context's protocol ---------------------------------

def test_split_follows_the_options_passed_not_the_protocol(ctx, data_dir):
    seven = Context(load_registry(), data_dir, Protocol(seed=7), ctx.cache_dir)
    a, b = SplitOptions(1, 0.2, 0.2), SplitOptions(2, 0.2, 0.2)
    # same options → identical splits, whatever the context's protocol seed (42 vs 7)
    assert ctx.split("dataset1", 0, a) == seven.split("dataset1", 0, a)
    assert ctx.split("dataset1", 0, b) == seven.split("dataset1", 0, b)
    # different seeds → different splits on the same context
    assert ctx.split("dataset1", 0, a).test != ctx.split("dataset1", 0, b).test
    # the fractions come from the options too: 95 records, 30 % → 28 test records (round(28.5) = 28)
    assert len(ctx.split("dataset1", 0, SplitOptions(1, 0.3, 0.2)).test) == round(0.3 * 95)
    # a stage's options: split_seed wins over the training seed when present
    varied = with_training_seed(OPTS, OPTS["seed"] + 5)
    assert varied["seed"] == 47 and varied["split_seed"] == 42
    assert ctx.split("dataset1", 2, varied) == ctx.split("dataset1", 2, OPTS)
    assert ctx.split("dataset1", 2, dict(OPTS, seed=47)) != ctx.split("dataset1", 2, OPTS)


# ---- target kinds -------------------------------------------------------------------------------

VALUES = np.array([0.51, 2.17, 34.5, 1769.0, 0.93])


@pytest.mark.parametrize("kind", [KAPPA_KIND, REGRESSION_KIND])
def test_kind_transform_round_trips_and_rebuilds_from_its_params(kind):
    t = kind.fit(VALUES)
    y = t.forward(VALUES)
    assert abs(y.mean()) < 1e-9 and abs(y.std() - 1) < 1e-9  # standardised
    np.testing.assert_allclose(t.inverse(y), VALUES, rtol=1e-10)
    yt = t.forward(torch.tensor(VALUES, dtype=torch.float64))
    np.testing.assert_allclose(t.inverse(yt).numpy(), VALUES, rtol=1e-6)
    assert kind.transform(t.params()) == t
    assert target_kind(kind.name) is kind


def test_kind_transforms_are_the_documented_ones():
    logv = np.log10(VALUES + 1.0)
    np.testing.assert_allclose(KAPPA_KIND.fit(VALUES).forward(VALUES), (logv - logv.mean()) / logv.std())
    np.testing.assert_allclose(REGRESSION_KIND.fit(VALUES).forward(VALUES),
                               (VALUES - VALUES.mean()) / VALUES.std())


def test_kind_losses_and_metrics_match_numpy():
    raw = np.array([0.3, -1.2, 0.8, 1.9, -0.1])
    values = torch.tensor(VALUES, dtype=torch.float64)
    # κ: MAPE on κ = 10^(raw·std + mean) − 1
    t = KAPPA_KIND.fit(VALUES)
    kappa_pred = 10.0 ** np.clip(raw * t.std + t.mean, 0.0, 8.0) - 1.0
    expected = np.mean(np.abs(kappa_pred - VALUES) / VALUES)
    assert KAPPA_KIND.loss(torch.tensor(raw), values, t).item() == pytest.approx(expected, rel=1e-12)
    assert KAPPA_KIND.metric(kappa_pred, VALUES) == pytest.approx(expected, rel=1e-12)
    assert KAPPA_KIND.metric_name == "mape"
    # regression: L1 on the standardised value; MAE in the target's units
    s = REGRESSION_KIND.fit(VALUES)
    z = (VALUES - VALUES.mean()) / VALUES.std()
    loss = REGRESSION_KIND.loss(torch.tensor(raw), values, s).item()
    assert loss == pytest.approx(np.mean(np.abs(raw - z)))
    pred = raw * VALUES.std() + VALUES.mean()
    assert REGRESSION_KIND.metric(pred, VALUES) == pytest.approx(np.mean(np.abs(pred - VALUES)))
    assert REGRESSION_KIND.metric_name == "mae"


def test_an_unknown_kind_is_one_clear_error():
    with pytest.raises(UserError, match="unknown target kind 'log10p1': expected one of kappa, regression"):
        target_kind("log10p1")


# ---- self-describing checkpoints ----------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(ctx):
    """A real stage: MEGNet from random weights on Dataset1, split 0, 2 epochs, a (64, 32) head."""
    torch.set_num_threads(1)
    options = dict(Protocol(epochs=2).training_options("dataset1"), head=[64, 32])
    spec = StageSpec(key="ckpt", backbone="megnet", init=Init.random(), parent=None, dataset="dataset1",
                     split=0, options=options, label="ckpt")
    payload, summary = train_stage(ctx, spec, None)
    return spec, payload, summary


def test_a_checkpoint_alone_rebuilds_the_trained_model(ctx, trained, tmp_path):
    spec, payload, _ = trained
    digest = save_checkpoint(tmp_path / "c.pt", payload)
    ckpt = load_checkpoint(tmp_path / "c.pt", digest)
    assert ckpt["head"] == [64, 32] and ckpt["backbone"] == "megnet" and ckpt["target_kind"] == "kappa"
    # the model as trained: built from the stage, loaded with the selected weights
    trained_model, _ = build_model(ctx, spec, None)
    trained_model.load_state_dict(payload["model"], strict=True)
    # rebuilt from the checkpoint only, by a fresh registry (no StageSpec, no context)
    restored = model_from_checkpoint(load_registry(), ckpt)
    assert restored.kind is KAPPA_KIND
    logk = np.log10(np.array([r.value for r in ctx.dataset("dataset1").records.values()]) + 1.0)
    assert restored.transform.params() == pytest.approx({"mean": logk.mean(), "std": logk.std()}, rel=1e-12)
    feats = list(ctx.features("megnet", "dataset1").values())
    expected = predict(trained_model, ctx.backbone("megnet"), feats)
    got = predict(restored.model, restored.backbone, feats)
    assert torch.equal(got, expected)
    # evaluate uses the checkpoint: its MAPE is the one computed here from the predictions
    test_ids = list(ctx.split("dataset1", 0, spec.options).test)
    records = ctx.dataset("dataset1").records
    fmap = ctx.features("megnet", "dataset1")
    raw = predict(restored.model, restored.backbone, [fmap[i] for i in test_ids])
    pred = restored.transform.inverse(raw.numpy())
    true = np.array([records[i].value for i in test_ids])
    rows = evaluate(ctx, spec, ckpt, ["dataset1"])
    row = next(r for r in rows if r["selection"] == "paper")  # the selected weights (the others: `last`)
    assert row["n_test"] == len(test_ids) and list(row["metrics"])[0] == "mape"
    assert row["metrics"]["mape"] == pytest.approx(np.mean(np.abs(pred - true) / true), rel=1e-12)
    logs = np.log10(np.maximum(pred, 1e-3)), np.log10(true)
    assert row["metrics"]["mae_log"] == pytest.approx(np.mean(np.abs(logs[0] - logs[1])), rel=1e-12)
    from scipy.stats import spearmanr

    assert row["metrics"]["spearman"] == pytest.approx(spearmanr(pred, true).statistic, rel=1e-12)


def test_a_checkpoint_written_before_it_described_itself_still_evaluates(ctx, trained):
    """Checkpoints of earlier runs hold the weights, (mean, std) and the transform's kind only."""
    spec, payload, _ = trained
    mean_std = (payload["transform"]["mean"], payload["transform"]["std"])
    old = {"model": payload["model"], "transform": mean_std,
           "transform_kind": "log10p1", "target": "kappa", "key": spec.key, "backbone": "megnet",
           "best_epoch": payload["best_epoch"]}
    tests = ["dataset1", "dataset2"]
    # an old checkpoint kept only the selected weights: it is read under the stage's selection alone
    current = [r for r in evaluate(ctx, spec, payload, tests) if r["selection"] == spec.options["selection"]]
    assert evaluate(ctx, spec, old, tests) == current
    restored = model_from_checkpoint(ctx, old)
    assert [m.out_features for m in restored.model.head.mlp if isinstance(m, torch.nn.Linear)] == [64, 32, 1]


def test_a_checkpoint_of_other_backbone_settings_is_refused_in_one_line(ctx, trained):
    _, payload, _ = trained
    other = dict(payload, backbone_settings={**payload["backbone_settings"], "cutoff": 99.0})
    with pytest.raises(UserError, match=r"^checkpoint ckpt: trained with megnet settings .* but the regist"):
        model_from_checkpoint(ctx, other)


def test_protocol_reads_back_what_run_json_keeps():
    import dataclasses
    import json

    from paraisite_bench.protocol import PRESETS, Protocol

    rich = dataclasses.replace(PRESETS["strict"]["protocol"], pretraining=(("crabnet", "expt_gap"),),
                               stage_options=(("aflow", (("epochs", 20), ("recipe", "crabnet"))),))
    for p in [*(v["protocol"] for v in PRESETS.values()), rich]:
        assert Protocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    # run.json written before per-dataset stage options
    old = {**Protocol().to_dict(), "stage_epochs": {"aflow": 30}, "stage_batch_size": {"expt_gap": 256}}
    del old["stage_options"]
    assert Protocol.from_dict(old).training_options("aflow")["epochs"] == 30
    assert Protocol.from_dict(old).training_options("expt_gap")["batch_size"] == 256


def test_init_string_form_reads_back():
    from paraisite_bench.strategy import Init

    for init in (Init.random(), Init.previous(), Init.weights("eform")):
        assert Init.parse(str(init)) == init
    with pytest.raises(ValueError):
        Init.parse("weights")
