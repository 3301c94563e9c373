"""Splits, target kinds (transform, loss, metric) and self-describing checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paraisite_bench.context import Context
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol
from paraisite_bench.targets import LogStandardTransform as TargetTransform
from paraisite_bench.targets import mape

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
    t = TargetTransform.fit(kappa)
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
    t = TargetTransform(mean=0.5, std=0.4)
    pred = torch.tensor([y], requires_grad=True)
    true = torch.tensor([1.0])  # standardised ≈ -0.5
    loss = torch.mean(torch.abs(t.inverse(pred) - true) / true)
    loss.backward()
    assert pred.grad.item() * direction > 0.1


def test_predictions_are_physical():
    t = TargetTransform(mean=0.5, std=0.4)
    assert t.inverse(np.array([-40.0]))[0] == 0.0
    assert t.inverse(torch.tensor([-40.0])).item() == 0.0
    assert t.inverse(np.array([40.0]))[0] == pytest.approx(1e8 - 1)
