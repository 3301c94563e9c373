"""Grouped splits (--split-by formula|chemsys|prototype), random splits that stay as they were, and
datasets that follow the splits of the datasets they share records with. Groups and twins are computed
here from the raw JSON with pymatgen, not with paraisite_bench.overlap."""

from __future__ import annotations

import csv
import gzip
import json
import warnings
from collections import defaultdict
from pathlib import Path

import pytest
from pymatgen.core import Composition, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from paraisite_bench.context import Context
from paraisite_bench.errors import UserError
from paraisite_bench.orchestrate import load_plugins
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol, SplitOptions
from paraisite_bench.userdata import add_datasets, dataset_specs

FIXTURE = Path(__file__).parent / "fixtures" / "random_splits_before_split_by.json"
SPLITS = 9


def raw(data_dir, name):
    with gzip.open(data_dir / "ltc" / f"{name}.json.gz", "rt") as fh:
        return json.load(fh)["records"]


def groups(records, key) -> list[list[str]]:
    out = defaultdict(list)
    for r in records:
        out[key(r)].append(r["id"])
    return [ids for ids in out.values() if len(ids) > 1]


def reduced(r):
    return Composition(r["formula"]).reduced_formula


def chemsys(r):
    return "-".join(sorted(el.symbol for el in Composition(r["formula"]).elements))


def prototype(r):
    """Anonymized formula, space group and orbit sizes in the conventional cell (no Wyckoff letters)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = Structure.from_str(r["cif"], fmt="cif")
        sga = SpacegroupAnalyzer(s, symprec=0.1, angle_tolerance=5)
        conv = SpacegroupAnalyzer(sga.get_conventional_standard_structure(), symprec=0.1, angle_tolerance=5)
        orbits = sorted(len(g) for g in conv.get_symmetrized_structure().equivalent_sites)
        return (s.composition.anonymized_formula, sga.get_space_group_number(), tuple(orbits))


def sides(split) -> dict[str, str]:
    out = {i: "train" for i in split.inner_train}
    out.update({i: "val" for i in split.inner_val})
    out.update({i: "test" for i in split.test})
    return out


@pytest.fixture(scope="module")
def ctx(data_dir, tmp_path_factory):
    registry = load_plugins(["subset_plugin_for_tests"])
    return Context(registry, data_dir, Protocol(), tmp_path_factory.mktemp("overlap-cache"))


def options(by: str) -> SplitOptions:
    return SplitOptions(42, 0.2, 0.2, by)


def test_dataset1_has_26_formula_twins(data_dir):
    twins = groups(raw(data_dir, "dataset1"), reduced)
    assert len(twins) == 26 and all(len(t) == 2 for t in twins)


@pytest.mark.parametrize("by, key", [("formula", reduced), ("chemsys", chemsys)])
def test_grouped_splits_never_split_a_group(ctx, data_dir, by, key):
    records = raw(data_dir, "dataset1")
    twins = groups(records, key)
    assert twins, "dataset1 has groups of several records under every key"
    fractions = []
    for r in range(SPLITS):
        split = ctx.split("dataset1", r, options(by))
        _check_groups(split, records, twins, (by, r))
        fractions.append(len(split.test) / len(records))
    assert len(set(fractions)) > 1  # the fraction varies with the groups drawn
    assert 0.1 < sum(fractions) / SPLITS < 0.3


def _check_groups(split, records, twins, where):
    side = sides(split)
    assert set(side) == {rec["id"] for rec in records}
    assert set(split.train) == set(split.inner_train) | set(split.inner_val)
    assert not set(split.test) & set(split.train)
    for ids in twins:
        assert len({side[i] for i in ids}) == 1, (where, ids, [side[i] for i in ids])


def test_prototype_splits_of_dataset1(ctx, data_dir):
    """Dataset1 holds 3 prototypes (rocksalt, zincblende, wurtzite): a prototype split keeps each whole,
    and a split that draws none of them (or all) for the test part is refused with one line."""
    records = raw(data_dir, "dataset1")
    protos = groups(records, prototype)
    assert sorted(len(g) for g in protos) == [29, 30, 36]
    usable, refused = 0, 0
    for r in range(20):
        try:
            split = ctx.split("dataset1", r, options("prototype"))
        except UserError as exc:
            assert "--split-by prototype" in str(exc) and "part is empty" in str(exc)
            refused += 1
            continue
        _check_groups(split, records, protos, ("prototype", r))
        assert len(split.test) in (29, 30, 36, 59, 65, 66)
        usable += 1
    assert usable and refused


def test_grouped_split_is_the_same_across_datasets(ctx):
    """MIX = Dataset1 ∪ Dataset2, AFLOW ∩ Dataset2: records with one formula are on one side everywhere."""
    d2 = ctx.dataset("dataset2").records
    aflow = ctx.dataset("aflow").records
    f2 = {i: Composition(r.formula).reduced_formula for i, r in d2.items()}
    fa = {Composition(r.formula).reduced_formula: i for i, r in aflow.items()}
    shared = [(i, fa[f]) for i, f in f2.items() if f in fa]
    assert len(shared) == 68
    for r in range(3):
        s2, sa = set(ctx.split("dataset2", r, options("formula")).test), \
            set(ctx.split("aflow", r, options("formula")).test)
        assert all((i in s2) == (j in sa) for i, j in shared)


def test_random_splits_are_unchanged(ctx):
    saved = json.loads(FIXTURE.read_text())["splits"]
    for name in ("dataset1", "dataset2", "mix"):
        for r in range(SPLITS):
            s = ctx.split(name, r, options("random"))
            assert list(s.test) == saved[name][r]["test"] and list(s.inner_val) == saved[name][r]["inner_val"]


def test_split_by_enters_stage_keys_only_when_not_random():
    assert "split_by" not in Protocol().training_options("dataset1")
    opts = Protocol(split_by="formula").training_options("dataset1")
    assert opts["split_by"] == "formula" and SplitOptions.of(opts).split_by == "formula"
    assert SplitOptions.of(Protocol().training_options("dataset1")).split_by == "random"


def _assert_follows(ctx, name, pairs, by):
    """Every (own id, Dataset1 id) pair is on the same side (test / inner val / inner train)."""
    for r in range(SPLITS):
        mine, d1 = sides(ctx.split(name, r, options(by))), sides(ctx.split("dataset1", r, options(by)))
        assert all(mine[i] == d1[j] for i, j in pairs), (name, by, r)


@pytest.mark.parametrize("by", ["random", "formula"])
def test_subset_dataset_follows_its_parent(ctx, data_dir, by):
    ids = sorted(r["id"] for r in raw(data_dir, "dataset1"))[::2]
    assert set(ids) < set(ctx.dataset("d1-half").records)
    _assert_follows(ctx, "d1-half", [(i, i) for i in ids], by)


@pytest.mark.parametrize("by", ["random", "formula"])
def test_dataset_file_follows_dataset1(data_dir, tmp_path, by):
    """A user file of 40 Dataset1 records: 20 keep their id, 20 are renamed (found by structure)."""
    records = sorted(raw(data_dir, "dataset1"), key=lambda r: r["id"])[:40]
    rows, pairs = [], []
    for k, r in enumerate(records):
        rid = r["id"] if k % 2 else f"mine-{k}"
        rows.append({"id": rid, "kappa": r["kappa"], "cif": r["cif"]})
        pairs.append((rid, r["id"]))
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(rows))
    registry = load_registry([])
    add_datasets(registry, dataset_specs([f"mine={path}"]))
    ctx = Context(registry, data_dir, Protocol(), tmp_path / "cache")
    _assert_follows(ctx, "mine", pairs, by)


def test_empty_side_is_one_user_error(data_dir, tmp_path):
    r = raw(data_dir, "dataset1")[0]
    path = tmp_path / "one.json"
    path.write_text(json.dumps([{"id": "x", "kappa": r["kappa"], "formula": r["formula"]}]))
    registry = load_registry([])
    add_datasets(registry, dataset_specs([f"one={path}"]))
    ctx = Context(registry, data_dir, Protocol(), tmp_path / "cache")
    with pytest.raises(UserError) as err:
        ctx.split("one", 0, options("formula"))
    msg = str(err.value)
    assert "\n" not in msg and "'one'" in msg and "split 0" in msg and "--split-by formula" in msg


def test_run_split_by_formula_and_a_refused_split(cli, data_dir, tmp_path):
    """A tiny run with --split-by formula records it; Dataset2 is one prototype (half-Heusler,
    computed here), so --split-by prototype has an empty side in every split: one line, nothing trained."""
    from conftest import SMALL

    out = tmp_path / "r"
    code, stdout, err = cli("run", *SMALL, "--strategies", "scratch", "--train", "dataset1", "--test",
                            "dataset1", "--splits", "1", "--split-by", "formula", "--out", str(out))
    assert code == 0, err
    info = json.loads((out / "run.json").read_text())
    assert info["protocol"]["split_by"] == "formula" and "not the paper's random splits" in stdout
    rows = [r for r in csv.DictReader(open(out / "results.csv")) if r["backbone"] != "baseline"]
    # one result (dataset1, split 0), read at the selected and at the last epoch
    assert sorted((r["split"], r["selection"]) for r in rows) == [("0", "last"), ("0", "paper")]
    n_test = int(rows[0]["n_test"])
    assert f"held-out fraction per split: dataset1 {n_test / 95:.2f}–{n_test / 95:.2f}" in stdout

    assert len({prototype(r) for r in raw(data_dir, "dataset2")}) == 1
    code, stdout, err = cli("run", *SMALL, "--strategies", "scratch", "--train", "dataset2", "--test",
                            "dataset2", "--splits", "1", "--split-by", "prototype", "--out",
                            str(tmp_path / "p"))
    assert code == 2 and err.count("\n") == 1, err
    assert "dataset 'dataset2', split 0" in err and "--split-by prototype" in err
    assert not (tmp_path / "p" / "results.csv").exists()
