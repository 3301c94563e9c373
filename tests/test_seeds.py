"""``--seeds K``: K training seeds per split on the same splits; Table I averages the seeds within a split
before the statistics over splits, and the report separates split from seed variance."""

from __future__ import annotations

import csv
import re
import statistics
from collections import defaultdict

import pytest
from conftest import SMALL

from paraisite_bench.context import Context
from paraisite_bench.jobs import build_plan
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol


@pytest.fixture(scope="module")
def seeded_run(tmp_path_factory, data_dir, cache_dir):
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("seeds") / "run"
    try:
        main(["run", *SMALL, "--seeds", "2", "--strategies", "scratch", "--train", "dataset1", "--test",
              "dataset1", "--baselines", "none", "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code
    return out


def test_each_split_is_trained_with_each_seed(seeded_run):
    rows = [r for r in csv.DictReader(open(seeded_run / "results.csv")) if r["selection"] == "paper"]
    assert sorted((int(r["split"]), int(r["seed"])) for r in rows) == [(0, 42), (0, 43), (1, 42), (1, 43)]
    assert len({r["stage_key"] for r in rows}) == 4
    # the seeds train differently on the same split
    by_split = defaultdict(set)
    for r in rows:
        by_split[r["split"]].add(r["mape"])
    assert all(len(v) == 2 for v in by_split.values())


def test_table1_averages_seeds_within_a_split_first(seeded_run):
    rows = [r for r in csv.DictReader(open(seeded_run / "results.csv")) if r["selection"] == "paper"]
    per_split = defaultdict(list)
    for r in rows:
        per_split[r["split"]].append(float(r["mape"]))
    means = [statistics.mean(v) for _, v in sorted(per_split.items())]
    (cell,) = [t for t in csv.DictReader(open(seeded_run / "table1.csv")) if t["selection"] == "paper"]
    assert int(cell["n_splits"]) == 2 and int(cell["n_seeds"]) == 2
    assert float(cell["mape_mean"]) == pytest.approx(statistics.mean(means), abs=1e-6)
    assert float(cell["mape_std"]) == pytest.approx(statistics.stdev(means), abs=1e-6)


def test_the_report_separates_split_from_seed_spread(seeded_run):
    rows = [r for r in csv.DictReader(open(seeded_run / "results.csv")) if r["selection"] == "paper"]
    per_split = defaultdict(list)
    for r in rows:
        per_split[r["split"]].append(float(r["mape"]))
    html = (seeded_run / "report.html").read_text()
    variance = html.split('<table class="list variance" data-metric="mape"', 1)[1].split("</table>", 1)[0]
    row = variance.split('data-selection="paper"', 1)[1]
    split_std = float(re.search(r'data-split-std="([^"]+)"', row).group(1))
    seed_std = float(re.search(r'data-seed-std="([^"]+)"', row).group(1))
    assert split_std == pytest.approx(statistics.stdev(statistics.mean(v) for v in per_split.values()))
    # pooled within-split std of the seeds (the estimator paraisite_bench.stats documents)
    pooled = (sum(statistics.variance(v) for v in per_split.values()) / len(per_split)) ** 0.5
    assert seed_std == pytest.approx(pooled)


def test_the_first_seed_keeps_the_stage_keys_of_a_run_without_seeds(data_dir, cache_dir):
    reg = load_registry()
    keys = {}
    for seeds in (1, 3):
        ctx = Context(reg, data_dir, Protocol(splits=2, epochs=2, seeds=seeds), cache_dir)
        plan = build_plan(ctx, ["megnet"], ["scratch", "double"], ["dataset1"], ["dataset1"])
        keys[seeds] = set(plan.stages)
    assert keys[1] < keys[3] and len(keys[3]) == 3 * len(keys[1])
