"""Decontaminated pretraining and the leakage audit of every result (issue 12): the audit's counts against
counts made here from the raw JSON (pymatgen Composition and StructureMatcher), the splits taken from the
code (they are tested in test_grouped_splits.py)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import pytest
from test_audit import FIXTURE, raw, reduced, structure

from paraisite_bench.context import Context
from paraisite_bench.jobs import build_plan
from paraisite_bench.leakage import audit_cells, chain_of, decontaminated_rows
from paraisite_bench.plugins import load_registry
from paraisite_bench.protocol import Protocol

GRID = dict(backbones=["megnet"], strategies=["scratch", "double"], train=["dataset1", "dataset2"],
            test=["dataset1", "dataset2"])


def _context(data_dir, cache_dir, **options) -> Context:
    protocol = Protocol(splits=3, epochs=1, subsample=(("aflow", 400),), **options)
    return Context(load_registry(), data_dir, protocol, cache_dir)


@pytest.fixture(scope="module")
def records(data_dir):
    """id -> (reduced formula, CIF) of every record of the three files."""
    out = {}
    for name in ("dataset1", "dataset2", "aflow_agl"):
        out.update({r["id"]: (reduced(r["formula"]), r["cif"]) for r in raw(data_dir, name)})
    return out


def _expected(ctx, plan, cell, records, matcher_cache) -> tuple[int, int]:
    """(formula, structure) counts of a cell, recomputed: the records its chain's stages train on (the
    paper regime trains on split r's 80 %, less what a decontaminated stage leaves out), against its test
    part, compared by reduced formula and by StructureMatcher within a formula."""
    from pymatgen.analysis.structure_matcher import StructureMatcher

    trained = set()
    for spec in chain_of(plan, cell["stage_key"]):
        left_out = {r["id"] for r in decontaminated_rows(ctx, [spec])}
        trained |= set(ctx.split(spec.dataset, cell["split"], spec.options).train) - left_out
    test = ctx.split(cell["test"], cell["split"], plan.stages[cell["stage_key"]].options).test
    formulas = {records[i][0] for i in trained}
    by_formula = defaultdict(list)
    for i in trained:
        by_formula[records[i][0]].append(i)

    def same(a, b):
        if (a, b) not in matcher_cache:
            matcher_cache[(a, b)] = StructureMatcher().fit(structure(records[a][1]), structure(records[b][1]))
        return matcher_cache[(a, b)]

    n_formula = sum(records[i][0] in formulas for i in test)
    n_structure = sum(i in trained or any(same(i, j) for j in by_formula[records[i][0]]) for i in test)
    return n_formula, n_structure


def test_the_paper_protocol_leaks_as_counted_from_the_data(data_dir, cache_dir, records):
    ctx = _context(data_dir, cache_dir)
    plan = build_plan(ctx, **GRID)
    cells = audit_cells(ctx, plan)
    cache: dict = {}
    for cell in cells:
        counts = (cell["leak_formula"], cell["leak_structure"])
        assert counts == _expected(ctx, plan, cell, records, cache), cell
    diagonal = [c["leak_formula"] for c in cells if c["strategy"] == "scratch" and c["train"] == c["test"]
                == "dataset1"]
    assert all(n > 0 for n in diagonal)  # Dataset1's polymorph twins across the random split


@pytest.mark.parametrize("by", ["structure", "formula"])
def test_decontaminated_grouped_splits_leave_no_test_record_seen(data_dir, cache_dir, records, by):
    ctx = _context(data_dir, cache_dir, split_by="formula", decontaminate=by)
    plan = build_plan(ctx, **GRID)
    cells = audit_cells(ctx, plan)
    assert cells and all(c["leak_structure"] == 0 for c in cells)
    if by == "formula":
        assert all(c["leak_formula"] == 0 for c in cells)
    cache: dict = {}
    for cell in cells:
        assert (cell["leak_formula"], cell["leak_structure"]) == _expected(ctx, plan, cell, records, cache)


def test_decontamination_removes_exactly_the_matching_records(data_dir, cache_dir, records):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    ctx = _context(data_dir, cache_dir, decontaminate="structure")
    plan = build_plan(ctx, **GRID)
    aflow_stages = [s for s in plan.stages.values() if s.dataset == "aflow"]
    assert aflow_stages and all(s.options["decontaminate"] == {"by": "structure",
                                                               "against": ["dataset1", "dataset2"]}
                                for s in aflow_stages)
    assert all("decontaminate" not in s.options for s in plan.stages.values() if s.dataset != "aflow")
    removed = {r["id"] for r in decontaminated_rows(ctx, plan.stages.values())}
    targets = [i for i in records if not i.startswith("aflow:")]
    matcher = StructureMatcher()
    expected = {a for a in ctx.dataset("aflow").records for t in targets
                if records[a][0] == records[t][0]
                and matcher.fit(structure(records[a][1]), structure(records[t][1]))}
    assert removed == expected
    # one AFLOW stage per split serves both targets: decontaminated against their union
    assert len(aflow_stages) == ctx.protocol.splits


def test_a_run_reports_its_leakage(cli, data_dir, records, tmp_path):
    """Dataset1 on itself, random splits: each result counts the test records whose polymorph twin is in the
    80 % (test parts from the splits saved before --split-by existed, tests/fixtures)."""
    out = tmp_path / "run"
    code, stdout, err = cli("run", "--preset", "quick", "--splits", "2", "--epochs", "1", "--strategies",
                            "scratch", "--train", "dataset1", "--test", "dataset1", "--baselines", "none",
                            "--no-progress", "--out", str(out))
    assert code == 0, err
    saved = json.loads(FIXTURE.read_text())["splits"]["dataset1"]
    d1 = [r["id"] for r in raw(data_dir, "dataset1")]
    rows = list(csv.DictReader(open(out / "results.csv")))
    for r in rows:
        test = set(saved[int(r["split"])]["test"])
        formulas = {records[i][0] for i in d1 if i not in test}
        assert int(r["leak_formula"]) == sum(records[i][0] in formulas for i in test) > 0
        assert int(r["leak_structure"]) == 0  # twins are different polymorphs, never the same structure
    assert "LEAKAGE: in 2 of 2 results" in stdout  # one audit per cell and split, whatever the reading
    table = list(csv.DictReader(open(out / "table1.csv")))
    for t in table:
        mine = [int(r["leak_formula"]) for r in rows if r["selection"] == t["selection"]]
        assert float(t["leak_formula"]) == pytest.approx(sum(mine) / len(mine))


def test_select_never_pretrains_on_a_repeats_test_records(data_dir, cache_dir):
    """A candidate's pretraining stage is shared by the repeats unless it could hold a repeat's test records:
    AFLOW (which shares 59 structures with Dataset2) leaves the matches out, MIX (which holds Dataset1)
    pretrains once per repeat on that repeat's split."""
    from paraisite_bench.study import build_study_plan, parse_candidate

    ctx = Context(load_registry(), data_dir, Protocol(splits=3, epochs=1), cache_dir)
    cands = [parse_candidate(ctx.registry, c) for c in ("megnet:aflow", "megnet:mix")]
    plan = build_study_plan(ctx, cands, "dataset2", repeats=3)
    pre = [s for s in plan.stages.values() if s.dataset == "aflow"]
    assert len(pre) == 1 and pre[0].split == 0
    assert pre[0].options["decontaminate"] == {"by": "structure", "against": ["dataset2"]}
    removed = {r["id"] for r in decontaminated_rows(ctx, pre)}
    assert len(removed) == 59  # the AFLOW ∩ Dataset2 structure matches (test_audit.py counts them)
    mix = sorted(s.split for s in plan.stages.values() if s.dataset == "mix")
    assert mix == [0, 1, 2]
