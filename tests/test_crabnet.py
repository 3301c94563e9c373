"""The CrabNet backbone, the composition datasets and the pretrained:<task> strategies (small sizes)."""

from __future__ import annotations

import csv
import json
import sqlite3
import sys

import numpy as np
import pytest
import torch

from paraisite_bench.data import KAPPA, Record, regression_target, validate_records

TINY = "d_model=32,N=1,heads=2,dim_feedforward=64"
FORMULAS = ["NaCl", "Fe2O3", "Li3Fe2(PO4)3", "Si", "Ba0.5Sr0.5TiO3", "Cu2ZnSnS4"]


@pytest.fixture(autouse=True)
def _tiny_crabnet(monkeypatch):
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", TINY)


def _backbone():
    from paraisite_crabnet import CrabNetBackbone

    return CrabNetBackbone()


def _batch(bb, formulas=FORMULAS):
    return bb.collate([bb.featurise(Record(id=f, formula=f, value=1.0)) for f in formulas])


def test_featurisation_matches_crabnets_own_edm():
    """Element numbers and fractions are what crabnet.utils.utils.get_edm gives (its element order)."""
    import pandas as pd
    from crabnet.utils.utils import get_edm

    bb = _backbone()
    batch = _batch(bb)
    edm, _y, _f = get_edm(pd.DataFrame({"formula": FORMULAS, "target": np.zeros(len(FORMULAS))}),
                          verbose=False)
    n = edm.shape[1] // 2
    ref_src = torch.as_tensor(edm[:, :n, 0], dtype=torch.long)
    ref_frac = torch.as_tensor(edm[:, n:, 0], dtype=torch.float32)
    assert torch.equal(batch.src, ref_src[:, : batch.src.shape[1]])
    assert torch.allclose(batch.frac, ref_frac[:, : batch.frac.shape[1]], atol=1e-6)


def test_representation_through_fc_out_reproduces_subcrab_output():
    """The 128-d representation (output_nn's input to fc_out, mean-pooled over real elements) passed
    through fc_out gives exactly SubCrab's own output, padding included."""
    bb = _backbone()
    module = bb.build()
    module.eval()
    batch = _batch(bb)
    with torch.no_grad():
        rep = module(batch)
        ours = module.crabnet_output(batch)
        theirs = module.subcrab(batch.src, batch.frac)
    assert rep.shape == (len(FORMULAS), bb.representation_dim)
    assert torch.allclose(ours, theirs, atol=1e-5)
    # pooling over the padding as well would not reproduce it (the test can fail)
    with torch.no_grad():
        fea = module.hidden(batch.src, batch.frac).mean(dim=1)
        out = module.subcrab.output_nn.fc_out(fea)
    assert not torch.allclose(out[:, :1] * torch.sigmoid(out[:, 2:]), theirs, atol=1e-5)


def test_a_formula_alone_or_padded_gives_the_same_representation():
    bb = _backbone()
    module = bb.build()
    module.eval()
    with torch.no_grad():
        alone = module(_batch(bb, ["NaCl"]))
        padded = module(_batch(bb, ["NaCl", "Cu2ZnSnS4"]))[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_importing_crabnet_does_not_reseed_our_generators():
    for name in [m for m in sys.modules if m.startswith("crabnet")]:
        sys.modules.pop(name)
    from paraisite_crabnet import _kingcrab

    torch.manual_seed(7)
    np.random.seed(7)
    expect = (torch.rand(3), np.random.rand(3))
    torch.manual_seed(7)
    np.random.seed(7)
    _kingcrab()  # crabnet.kingcrab calls torch.manual_seed(42) / np.random.seed(42) at import
    assert "crabnet.kingcrab" in sys.modules
    assert torch.equal(torch.rand(3), expect[0])
    assert np.array_equal(np.random.rand(3), expect[1])


def test_bad_formula_and_unknown_size_setting_are_clear(monkeypatch):
    from paraisite_bench.errors import RecordError, UserError

    bb = _backbone()
    with pytest.raises(RecordError, match="does not parse"):
        bb.featurise(Record(id="x", formula="Xx2!", value=1.0, source="t"))
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", "d_modle=64")
    with pytest.raises(UserError, match="unknown setting 'd_modle'"):
        _backbone()


def test_targets_decide_record_validation():
    recs = [Record("a", "NaCl", 0.0), Record("b", "KCl", -1.0), Record("c", "LiF", float("nan")),
            Record("d", "NaF", 2.0)]
    good, bad = validate_records("gap", recs, regression_target("band gap", "eV"))
    assert [r.id for r in good] == ["a", "b", "d"] and [e.record_id for e in bad] == ["c"]
    good, bad = validate_records("k", recs, KAPPA)
    assert [r.id for r in good] == ["d"] and "≤ 0" in bad[0].problem


def test_matbench_rows_carry_the_official_fold_ids():
    """Row i of crabnet's csv is matbench's mb-<task>-<i+1>: the ids are exactly the official folds'."""
    from matbench.metadata import mbv01_validation
    from paraisite_matbench import TASKS, load_task

    for name in ("expt_gap", "steels_yield", "elasticity_log10_kvrh", "phonons"):
        task = TASKS[name]
        ids = {r.id for r in load_task(task)}
        folds = mbv01_validation.splits[task.matbench]
        official = {i for f in folds.values() for i in f.test}
        assert ids == official, name


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_crabnet_and_megnet_end_to_end_with_a_shared_pretraining_stage(cli, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--backbones", "megnet,crabnet",
            "--strategies", "scratch,pretrained:expt_gap,double:expt_gap",
            "--train", "dataset1", "--test", "dataset1", "--splits", "1", "--epochs", "2",
            "--stage-epochs", "expt_gap=1,aflow=1", "--subsample", "expt_gap=150,aflow=60",
            "--no-progress", "--out", str(out)]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    rows = [r for r in _rows(out / "results.csv") if r["backbone"] != "baseline"]
    got = {(r["backbone"], r["strategy"]) for r in rows}
    assert got == {("megnet", "scratch"), ("crabnet", "scratch"), ("crabnet", "pretrained:expt_gap"),
                   ("crabnet", "double:expt_gap")}
    assert all(0 < float(r["mape"]) for r in rows)
    # a structure backbone skips the composition-only pretraining set, with the reason in skipped.csv
    skipped = {r["id"]: r["problem"] for r in _rows(out / "skipped.csv")}
    assert "compositions only" in skipped["megnet × pretrained:expt_gap"]
    # Dataset1's polymorph pairs: one warning, recorded in run.json
    assert stderr.count("26 formulas occur more than once") == 1
    assert any("26 formulas" in n for n in json.loads((out / "run.json").read_text())["notes"])
    # the expt_gap stage is trained once and shared by pretrained:expt_gap and double:expt_gap
    db = sqlite3.connect(out / "store.sqlite")
    datasets = [json.loads(s)["dataset"] for (s,) in db.execute("SELECT spec FROM stages")]
    assert (datasets.count("expt_gap") == 1 and datasets.count("aflow") == 1
            and datasets.count("dataset1") == 4)
    db.close()
    code, stdout, _ = cli(*args)
    assert code == 0 and "0 stages trained" in stdout


def test_fidelity_check_scores_with_matbench(data_dir, cache_dir):
    """One fold of the expt_gap fidelity check at toy size: recorded and scored by matbench itself."""
    from paraisite_matbench.fidelity import run

    out = run("crabnet", "expt_gap", epochs=1, batch_size=256, folds=[0], threads=1, data_dir=data_dir,
              cache_dir=cache_dir, lr=1e-3, cosine_tmax=1, inner_val=0.1)
    fold = out["folds"][0]
    assert fold["n_test"] == 921 and fold["n_train"] + fold["n_val"] == 3683
    assert 0 < out["mean_mae_recorded_folds"] < 5
    assert out["published"]["mean_mae"] == pytest.approx(0.3463)


# ---- published size, batcher, training recipes (issue 16) ----------------------------------------

def test_published_size_is_subcrabs_own_defaults(monkeypatch):
    """``published`` means SubCrab's defaults (read from its signature here), overridable item by item; the
    representation stays 128 wide (output_nn's last hidden width does not follow d_model)."""
    import inspect

    from crabnet.kingcrab import SubCrab
    from paraisite_crabnet import CrabNetBackbone, settings_from_env

    defaults = inspect.signature(SubCrab.__init__).parameters
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", "published")
    got = settings_from_env()
    assert got == {k: defaults[k].default for k in ("d_model", "N", "heads", "dim_feedforward", "dropout")}
    assert got["d_model"] == 512
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", "published,dropout=0.2")
    assert settings_from_env() == dict(got, dropout=0.2)
    bb = CrabNetBackbone()
    module = bb.build().eval()
    assert module.subcrab.d_model == 512 and defaults["out_hidden"].default[-1] == bb.representation_dim
    with torch.no_grad():
        assert module(_batch(bb)).shape == (len(FORMULAS), bb.representation_dim)


@pytest.fixture(scope="module")
def d1_ctx(data_dir, cache_dir):
    from paraisite_bench.context import Context
    from paraisite_bench.plugins import load_registry
    from paraisite_bench.protocol import Protocol

    mp = pytest.MonkeyPatch()
    mp.setenv("PARAISITE_BENCH_CRABNET", TINY)
    yield Context(load_registry(), data_dir, Protocol(epochs=4), cache_dir)
    mp.undo()


def test_padded_batcher_builds_collates_batch(d1_ctx):
    """The pre-padded batcher's batch is collate's (same tensors, dtypes, padding width) and the model's
    outputs on both are equal."""
    bb = d1_ctx.backbone("crabnet")
    feats = list(d1_ctx.features("crabnet", "dataset1").values())
    batcher = bb.batcher(feats)
    longest = max(range(len(feats)), key=lambda i: len(feats[i][0]))
    module = bb.build().eval()
    for idx in ([3, 0, 50, 7, 7, 94, 12, 1], [5], [longest, 2], list(range(len(feats)))[::-1]):
        ref, got = bb.collate([feats[i] for i in idx]), batcher(idx)
        for a, b in zip(ref, got):
            assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        with torch.no_grad():
            assert torch.equal(module(ref), module(got))


def _stage(ctx, **options):
    from paraisite_bench.strategy import Init
    from paraisite_bench.train import StageSpec

    opts = dict(ctx.protocol.training_options("dataset1"), **options)
    return StageSpec(key="r", backbone="crabnet", init=Init.random(), parent=None, dataset="dataset1",
                     split=0, options=opts, label="recipe")


def _triangle(step: int, base: float, top: float, half: int) -> float:
    """CyclicLR's triangular policy (Smith 2017, eq. in section 3.1), written out here."""
    cycle = np.floor(1 + step / (2 * half))
    x = abs(step / half - 2 * cycle + 1)
    return base + (top - base) * max(0.0, 1 - x)


def test_crabnet_recipe_trains_a_stage_on_the_cyclic_lr(d1_ctx):
    """A Dataset1 stage with ``recipe=crabnet`` trains; its recorded lr after each epoch is the triangle
    of CyclicLR after that many batches; the averaged weights are scored and recorded."""
    from paraisite_bench.train import stage_ids, train_stage

    spec = _stage(d1_ctx, recipe="crabnet", epochs=4, epochs_step=1)
    payload, summary = train_stage(d1_ctx, spec, None)
    steps = -(-len(stage_ids(d1_ctx, spec)[0]) // spec.options["batch_size"])
    for row in summary["curves"]:
        assert row["lr"] == pytest.approx(_triangle(row["epoch"] * steps, 1e-4, 6e-3, steps), rel=1e-9)
        assert np.isfinite(row["train_mape"]) and np.isfinite(row["val_mape"])
    assert set(summary["averaged"]) == {"val", "selected"}
    candidates = [r["val_mape"] for r in summary["curves"]] + [summary["averaged"]["val"]]
    assert summary["best_val"] == min(candidates)
    # a stage that names no recipe: Adam at the protocol's lr, nothing averaged
    _, plain = train_stage(d1_ctx, _stage(d1_ctx, epochs=2), None)
    assert "averaged" not in plain and plain["curves"][0]["lr"] == pytest.approx(1e-3)


def test_crabnet_recipe_averages_the_weights_crabnets_rule_picks():
    """SWA snapshots at the ends of check epochs (every 2 × epochs_step), by crabnet's rule
    (crabnet/utils/optim.py, SWA.update_swa): a 2 % improvement on the metric of the last restart restarts
    the average with the snapshot (which is then also added as one within 1 % of the best: it counts
    twice), a snapshot within 1 % of the best is added, the n-th addition with weight (1/(n+1))^(1/3);
    computed here from the snapshots, independently of crabnet's SWA class."""
    from paraisite_crabnet import CrabNetRecipe

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    recipe = CrabNetRecipe(model, {"epochs_step": 1}, steps_per_epoch=2, loop="fast",
                           device=torch.device("cpu"))
    assert recipe.averaged_state() is None
    x, y = torch.randn(8, 3), torch.randn(8)
    snapshots = {}
    maes = {2: 1.0, 4: 0.995, 6: 1.5, 8: 1.003}  # reset+add, add, skip (worse), add (within 1 %)
    for epoch in range(1, 9):
        for _ in range(2):
            recipe.optimizer.zero_grad()
            ((model(x).squeeze(-1) - y) ** 2).mean().backward()
            recipe.optimizer.step()
            recipe.after_step()
        recipe.after_epoch(epoch, maes.get(epoch, 9.0))
        if epoch % 2 == 0:
            snapshots[epoch] = {k: v.clone() for k, v in model.state_dict().items()}
    assert [c[2] for c in recipe.checks] == [True, True, False, True]
    expected = {}
    for n, epoch in enumerate((2, 2, 4, 8)):
        for k, v in snapshots[epoch].items():
            expected[k] = v.clone() if n == 0 else expected[k] + (v - expected[k]) * (1 / (n + 1)) ** (1 / 3)
    got = recipe.averaged_state()
    for k in expected:
        assert torch.allclose(got[k], expected[k], atol=1e-7)
    # reading the average leaves the model's own weights in place
    for k, v in model.state_dict().items():
        assert torch.equal(v, snapshots[8][k])


class _SGDConstant:
    """A third-party recipe module: SGD at a fixed lr of 0.0123, whatever the stage's lr."""

    from paraisite_bench import hookimpl
    from paraisite_bench.recipe import Recipe

    class Recipe_(Recipe):
        name = "sgd-const"
        built = []

        def __init__(self, model, options, steps_per_epoch, loop, device):
            self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0123)
            self.built.append(steps_per_epoch)

    @staticmethod
    @hookimpl
    def register_recipes(register):
        register(_SGDConstant.Recipe_)


def test_a_plugins_recipe_is_used_by_the_stage_that_names_it(data_dir, cache_dir):
    import types

    from paraisite_bench.context import Context
    from paraisite_bench.errors import UserError
    from paraisite_bench.plugins import load_registry
    from paraisite_bench.protocol import Protocol
    from paraisite_bench.train import train_stage

    plugin = types.ModuleType("recipe_plugin_for_tests")
    plugin.register_recipes = _SGDConstant.register_recipes
    registry = load_registry([plugin])
    assert not registry.broken and registry.providers[("recipe", "sgd-const")] == "recipe_plugin_for_tests"
    assert registry.identity("recipe", "crabnet")["plugin"] == "crabnet"
    ctx = Context(registry, data_dir, Protocol(epochs=2), cache_dir)
    _, summary = train_stage(ctx, _stage(ctx, recipe="sgd-const", epochs=2), None)
    assert [r["lr"] for r in summary["curves"]] == [0.0123, 0.0123] and len(_SGDConstant.Recipe_.built) == 1
    with pytest.raises(UserError) as err:
        train_stage(ctx, _stage(ctx, recipe="nope", epochs=1), None)
    assert "unknown recipe 'nope'" in str(err.value) and "sgd-const" in str(err.value)
    assert "\n" not in str(err.value)


def test_recipe_hook_docstring_example_runs(tmp_path, monkeypatch):
    """register_recipes' documented example is a working plugin: loaded like a third party's module, its
    recipe divides the lr by 10 after every 10 epochs."""
    import importlib
    import textwrap

    from paraisite_bench import hookspecs
    from paraisite_bench.plugins import load_registry

    code = textwrap.dedent(hookspecs.register_recipes.__doc__.split("Runnable example::", 1)[1])
    (tmp_path / "example_register_recipes.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = load_registry([importlib.import_module("example_register_recipes")], entry_points=False)
    assert not registry.broken
    recipe = registry.get("recipe", "sgd-step")(torch.nn.Linear(2, 1), {"lr": 0.5}, 3, "fast", "cpu")
    lrs = []
    for epoch in range(1, 22):
        recipe.optimizer.step()  # no gradients: the weights stay, the schedule sees a step
        lrs.append(recipe.lr())
        recipe.after_epoch(epoch, 1.0)
    assert lrs[0] == lrs[9] == 0.5 and lrs[10] == pytest.approx(0.05) and lrs[20] == pytest.approx(0.005)
