"""A backbone without published weights runs Steps 2 and 3 from its default pretraining: one stage on the
pretraining dataset (split 0, the backbone's stage options under the protocol's per-dataset ones), shared by
every split, strategy and target; --pretraining picks another dataset; --stage-options sets any stage's
epochs, batch size, lr, schedule and recipe."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest
from conftest import SMALL

from paraisite_bench.context import Context
from paraisite_bench.jobs import build_plan
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import PRESETS

STRATEGIES = ["scratch", "pretrained", "double"]


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def _plan(registry, data_dir, backbone="crabnet", **protocol):
    proto = dataclasses.replace(PRESETS["quick"]["protocol"], **protocol)
    ctx = Context(registry, data_dir, proto)
    return ctx, build_plan(ctx, [backbone], STRATEGIES, ["dataset1"], ["dataset1"])


def test_crabnet_steps_2_and_3_start_from_one_shared_pretraining_stage(registry, data_dir):
    ctx, plan = _plan(registry, data_dir)
    assert not plan.skipped
    pre = [s for s in plan.stages.values() if s.dataset == "mp_e_form"]
    assert len(pre) == 1
    pre = pre[0]
    assert (str(pre.init), pre.parent, pre.split) == ("random", None, 0)
    # the backbone's own options for its pretraining, the protocol's for everything else
    assert (pre.options["epochs"], pre.options["batch_size"], pre.options["lr"]) == (30, 256, 3e-4)
    by_cell = {(c.strategy, c.split): c for c in plan.cells}
    splits = ctx.protocol.splits
    for r in range(splits):
        assert by_cell[("scratch", r)].chain == "random>dataset1"
        assert by_cell[("pretrained", r)].chain == "random>mp_e_form>dataset1"
        assert by_cell[("double", r)].chain == "random>mp_e_form>aflow>dataset1"
        target = plan.stages[by_cell[("pretrained", r)].stage_key]
        assert target.parent == pre.key and target.split == r and target.options["epochs"] == 15
        aflow = plan.stages[plan.stages[by_cell[("double", r)].stage_key].parent]
        assert aflow.dataset == "aflow" and aflow.parent == pre.key and aflow.split == r
    # scratch + pretrained + double targets per split, one AFLOW stage per split, one pretraining stage
    assert len(plan.stages) == 3 * splits + splits + 1


def test_megnet_chains_are_unchanged(registry, data_dir):
    _ctx, plan = _plan(registry, data_dir, backbone="megnet")
    assert {c.chain for c in plan.cells} == {"random>dataset1", "weights:eform>dataset1",
                                             "weights:eform>aflow>dataset1"}


def test_pretraining_option_picks_another_dataset(registry, data_dir):
    _ctx, plan = _plan(registry, data_dir, pretraining=(("crabnet", "expt_gap"),))
    (pre,) = [s for s in plan.stages.values() if s.parent is None and s.dataset != "dataset1"]
    assert pre.dataset == "expt_gap"
    # not the backbone's default: the protocol's options (quick: 15 epochs, batch 8)
    assert (pre.options["epochs"], pre.options["batch_size"]) == (15, 8)


def test_stage_options_override_the_backbones_defaults_option_by_option(registry, data_dir):
    options = (("mp_e_form", (("epochs", 3), ("recipe", "crabnet"))),)
    _ctx, plan = _plan(registry, data_dir, stage_options=options)
    (pre,) = [s for s in plan.stages.values() if s.dataset == "mp_e_form"]
    assert (pre.options["epochs"], pre.options["batch_size"], pre.options["recipe"]) == (3, 256, "crabnet")
    assert all("recipe" not in s.options for s in plan.stages.values() if s.dataset != "mp_e_form")


def test_pretraining_a_backbone_with_published_weights_is_refused(registry, data_dir):
    _ctx, plan = _plan(registry, data_dir, backbone="megnet", pretraining=(("megnet", "expt_gap"),))
    reasons = {s: why for _b, s, why in plan.skipped}
    assert "published weights" in reasons["pretrained"] and "published weights" in reasons["double"]


@pytest.mark.parametrize("value", ["mp_e_form", "mp_e_form:epochs=x", "mp_e_form:speed=3", ":epochs=3",
                                   "mp_e_form:recipe=nope"])
def test_bad_stage_options_give_one_line(cli, tmp_path, value):
    code, out, err = cli("run", *SMALL, "--backbones", "crabnet", "--stage-options", value, "--out",
                         str(tmp_path / "run"))
    assert code == 2
    assert ("--stage-options" in err or "unknown recipe" in err) and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_run_fills_every_step_for_crabnet_and_says_where_step_2_starts(cli, tmp_path):
    code, out, err = cli("run", *SMALL, "--backbones", "crabnet", "--train", "dataset1", "--test", "dataset1",
                         "--stage-options", "mp_e_form:epochs=1", "--subsample", "mp_e_form=300,aflow=60",
                         "--baselines", "none", "--out", str(tmp_path / "run"))
    assert code == 0, err
    with open(tmp_path / "run" / "results.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["selection"] == "paper"]
    assert sorted({r["strategy"] for r in rows}) == sorted(STRATEGIES)
    assert len(rows) == 3 * 2 and all(r["mape"] for r in rows)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert "matbench_mp_e_form" in info["starting_points"]["crabnet"]
    assert info["protocol"]["stage_options"] == {"mp_e_form": {"epochs": 1}}
    html = (tmp_path / "run" / "report.html").read_text()
    assert "Steps 2 and 3" in html and "matbench_mp_e_form" in html


def test_unknown_pretraining_dataset_is_one_line(cli, tmp_path):
    code, out, err = cli("run", *SMALL, "--backbones", "crabnet", "--pretraining", "crabnet=nope", "--out",
                         str(tmp_path / "run"))
    assert code == 2 and "nope" in err and "Traceback" not in err


def test_protocol_keeps_stage_options_hashable_and_sorted():
    from paraisite_bench.protocol import merged_stage_options, stage_options_of

    a = stage_options_of({"b": {"lr": 1e-3}, "a": {"epochs": 2, "batch_size": 4}})
    assert a == (("a", (("batch_size", 4), ("epochs", 2))), ("b", (("lr", 1e-3),)))
    assert merged_stage_options(a, stage_options_of({"a": {"epochs": 5}})) == (
        ("a", (("batch_size", 4), ("epochs", 5))), ("b", (("lr", 1e-3),)))
