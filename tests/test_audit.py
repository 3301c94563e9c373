"""``paraisite-bench audit``: its counts against counts computed here from the raw JSON (pymatgen
Composition and StructureMatcher with its default tolerances) and from the random splits saved before
--split-by existed (tests/fixtures)."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

FIXTURE = Path(__file__).parent / "fixtures" / "random_splits_before_split_by.json"


def raw(data_dir, name):
    with gzip.open(data_dir / "ltc" / f"{name}.json.gz", "rt") as fh:
        return json.load(fh)["records"]


def reduced(formula):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Composition(formula).reduced_formula


def structure(cif):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def matched(a, b) -> tuple[set, set]:
    """Ids of a and of b with a record of the other side of the same formula and a matching structure."""
    fa = {r["id"]: reduced(r["formula"]) for r in a}
    fb = {r["id"]: reduced(r["formula"]) for r in b}
    matcher, ma, mb = StructureMatcher(), set(), set()
    cif_a, cif_b = {r["id"]: r["cif"] for r in a}, {r["id"]: r["cif"] for r in b}
    for x, fx in fa.items():
        for y, fy in fb.items():
            if fx == fy and matcher.fit(structure(cif_a[x]), structure(cif_b[y])):
                ma.add(x)
                mb.add(y)
    return ma, mb


def pair_counts(a, b):
    """(records of a, records of b, formulas) sharing a formula, and the same with a matching structure."""
    fa = {r["id"]: reduced(r["formula"]) for r in a}
    fb = {r["id"]: reduced(r["formula"]) for r in b}
    common = set(fa.values()) & set(fb.values())
    ma, mb = matched(a, b)
    formula = (sum(f in common for f in fa.values()), sum(f in common for f in fb.values()), len(common))
    return formula, (len(ma), len(mb), len({fa[x] for x in ma}))


def test_audit_counts_match_the_json(cli, data_dir):
    d1, d2, aflow = raw(data_dir, "dataset1"), raw(data_dir, "dataset2"), raw(data_dir, "aflow_agl")
    code, out, err = cli("audit", "dataset1", "dataset2", "aflow")
    assert code == 0, err
    lines = out.splitlines()

    def line(prefix):
        return next(x for x in lines if x.startswith(prefix))

    twins1 = [f for f, n in Counter(reduced(r["formula"]) for r in d1).items() if n > 1]
    twins2 = sorted(f for f, n in Counter(reduced(r["formula"]) for r in d2).items() if n > 1)
    assert len(twins1) == 26 and twins2 == ["LiCdAs", "LiMgSb"]
    assert "26 formulas held by 2+ records (52 records)" in line("  dataset1: 95 records")
    assert "2 formulas held by 2+ records (4 records) (e.g. LiCdAs, LiMgSb)" in line("  dataset2: 143")
    expected = {"dataset1": ((13, 12, 12), (11, 11, 11)), "dataset2": ((68, 68, 68), (59, 59, 59))}
    for name, records in [("dataset1", d1), ("dataset2", d2)]:
        counts = pair_counts(records, aflow)
        assert counts == expected[name]  # the numbers of issue 12
        (fa, fb, nf), (sa, sb, ns) = counts
        text = line(f"  {name} ∩ aflow:")
        assert f"formula {fa} / {fb} records, {nf} formulas" in text, text
        assert f"structure {sa} / {sb} records, {ns} formulas" in text, text
    assert "no common formula" in line("  dataset1 ∩ dataset2:")

    # the formula twins of each random test part in its training part, from the saved splits
    formula = {r["id"]: reduced(r["formula"]) for r in d1}
    leaks = []
    for split in json.loads(FIXTURE.read_text())["splits"]["dataset1"]:
        test = set(split["test"])
        trained = {formula[i] for i in formula if i not in test}
        leaks.append(sum(formula[i] in trained for i in test))
    text = next(x for x in lines if x.startswith("  dataset1: test fraction"))
    assert f"with a formula twin in training {np.mean(leaks):.2f} ({min(leaks):.2f}–{max(leaks):.2f})" in text
    assert abs(np.mean(leaks) - 8.33) < 0.01 and "test records 19.0 (19.0–19.0)" in text


def test_audit_formula_splits_leak_no_twin(cli):
    code, out, err = cli("audit", "--split-by", "formula", "dataset1", "dataset2")
    assert code == 0, err
    rows = [x for x in out.splitlines() if ": test fraction per split" in x]
    assert len(rows) == 2
    for row in rows:
        assert "with a formula twin in training 0.00 (0.00–0.00)" in row
        fractions = [float(f) for f in re.search(r"per split ([0-9., ]+);", row).group(1).split(", ")]
        assert len(fractions) == 9 and len(set(fractions)) > 1 and 0.1 < np.mean(fractions) < 0.3


def test_audit_says_an_empty_side_in_one_line(cli, data_dir, tmp_path):
    r = raw(data_dir, "dataset1")[0]
    path = tmp_path / "one.json"
    path.write_text(json.dumps([{"id": "x", "kappa": r["kappa"], "formula": r["formula"]}]))
    code, out, err = cli("audit", "--dataset-file", f"one={path}", "--split-by", "formula", "one")
    assert code == 0, err
    lines = out.splitlines()
    rows = [x for x in lines[next(i for i, x in enumerate(lines) if x.startswith("splits (")):]
            if x.startswith("  one: ")]
    assert len(rows) == 1
    row = rows[0]
    assert "split 0" in row and "part is empty with --split-by formula" in row


def test_matching_ids_and_seen_counts(data_dir, tmp_path):
    """The API that decontamination and the leakage column use, against the counts computed here."""
    from paraisite_bench.context import Context
    from paraisite_bench.orchestrate import load_plugins
    from paraisite_bench.overlap import matching_ids, seen_counts
    from paraisite_bench.protocol import Protocol

    d1, d2, aflow = raw(data_dir, "dataset1"), raw(data_dir, "dataset2"), raw(data_dir, "aflow_agl")
    ctx = Context(load_plugins(), data_dir, Protocol(), tmp_path)
    by_formula = matching_ids(ctx, "aflow", ["mix"], "formula")
    mix_formulas = {reduced(r["formula"]) for r in d1 + d2}
    assert by_formula == {r["id"] for r in aflow if reduced(r["formula"]) in mix_formulas}
    assert len(by_formula) == 12 + 68 and len(matching_ids(ctx, "aflow", ["mix"], "structure")) == 11 + 59
    assert len(matching_ids(ctx, "dataset2", ["aflow"], "structure")) == 59

    # Dataset1's first 30 ids tested after training on AFLOW and on Dataset1's other records
    ids = sorted(r["id"] for r in d1)
    test, rest = ids[:30], ids[30:]
    formula = {r["id"]: reduced(r["formula"]) for r in d1}
    trained_formulas = {reduced(r["formula"]) for r in aflow} | {formula[i] for i in rest}
    seen = seen_counts(ctx, "dataset1", test, [("aflow", [r["id"] for r in aflow]), ("dataset1", rest)])
    assert seen["formula"] == sum(formula[i] in trained_formulas for i in test)
    # Dataset1's twins never match each other's structure (zincblende vs wurtzite): only AFLOW matches count
    aflow_match = matched(d1, aflow)[0]
    assert seen["structure"] == len(aflow_match & set(test)) > 0
    assert seen_counts(ctx, "mix", test[:5], [("dataset1", test[:5])]) == {"formula": 5, "structure": 5}
