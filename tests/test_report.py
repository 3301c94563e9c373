"""The report's aggregation and comparison logic on known inputs, its exports, its sections, and the
``report`` command on several run directories (real runs are exercised in test_report_browser.py)."""

from __future__ import annotations

import csv
import re
import statistics
from pathlib import Path

import pytest

from paraisite_bench import report as rp
from paraisite_bench.plugins import load_registry
from paraisite_bench.reference import PAPER_TABLE1, load_paper_table1
from paraisite_bench.results import LoadedRun, ReportData, aggregate, merge

#: the sections every report has: the built-in plugin's, through the register_report_sections hook
SECTIONS = rp.ordered_sections(load_registry())


def _row(strategy, train, test, split, mape, backbone="megnet", selection="paper", key=None):
    return {"backbone": backbone, "strategy": strategy, "train": train, "test": test, "split": split,
            "mape": mape, "n_test": 19, "best_epoch": 3, "selection": selection, "chain": f"random>{train}",
            "weights_loaded": "", "stage_key": key or f"{backbone}-{strategy}-{train}-{split}-{selection}"}


def _cell(backbone, strategy, train, test, split):
    return {"backbone": backbone, "strategy": strategy, "train": train, "test": test, "split": split,
            "stage_key": f"{backbone}-{strategy}-{train}-{split}-paper", "chain": f"random>{train}"}


def test_aggregate_is_mean_and_sample_std_per_cell_and_selection():
    rows = [_row("scratch", "dataset1", "dataset1", r, v) for r, v in enumerate([0.2, 0.4, 0.9])]
    rows += [_row("scratch", "dataset1", "dataset1", 0, 0.7, selection="heldout")]
    rows += [_row("scratch", "dataset1", "aflow", 0, 1.5)]
    table = {(t["test"], t["selection"]): t for t in aggregate(rows)}
    t = table[("dataset1", "paper")]
    assert t["mape_mean"] == pytest.approx(0.5)
    assert t["mape_std"] == pytest.approx(statistics.stdev([0.2, 0.4, 0.9]), abs=1e-6)  # ddof = 1
    assert t["n_splits"] == 3
    assert (t["paper_mean"], t["paper_std"]) == (0.82, 0.21)
    heldout = table[("dataset1", "heldout")]
    assert heldout["mape_mean"] == 0.7 and heldout["n_splits"] == 1
    assert table[("aflow", "paper")]["mape_std"] == 0.0  # one split: no spread, not NaN


def test_compare_gives_the_difference_and_marks_only_means_outside_the_paper_band():
    assert rp.compare(0.50, (0.82, 0.21, "paper")) == {"delta": pytest.approx(-0.32), "outside": True}
    assert rp.compare(0.70, (0.82, 0.21, "paper")) == {"delta": pytest.approx(-0.12), "outside": False}
    assert rp.compare(1.03, (0.82, 0.21, "paper"))["outside"] is False  # on the edge: inside
    assert rp.compare(1.04, (0.82, 0.21, "paper"))["outside"] is True
    assert rp.compare(0.5, None) == {"delta": None, "outside": False}
    # a paper number produced differently from ours (an annotated cell) is never flagged
    assert rp.compare(0.50, (0.82, 0.21, "paper"), like=False)["outside"] is False


def _data(rows, cells, runs_extra=None):
    info = {"backbones": sorted({c["backbone"] for c in cells}),
            "strategies": ["scratch", "pretrained", "double"],
            "train": ["dataset1", "dataset2"], "test": ["dataset1", "dataset2", "aflow"],
            "protocol": {"splits": 2}, "cells": cells,
            "labels": {"dataset1": "Dataset1", "dataset2": "Dataset2", "aflow": "AFLOW"},
            **(runs_extra or {})}
    return merge([LoadedRun(info=info, rows=rows)])


def test_grid_marks_missing_partial_and_unplanned_cells_and_cells_the_paper_lacks():
    cells = [_cell("megnet", s, tr, te, r) for s in ("scratch", "double") for tr in ("dataset1", "dataset2")
             for te in ("dataset1", "dataset2") for r in (0, 1)]
    rows = [_row("scratch", "dataset1", "dataset1", r, v) for r, v in ((0, 0.3), (1, 0.5))]
    rows += [_row("scratch", "dataset1", "dataset2", 0, 2.0)]  # split 1 missing: partial
    rows += [_row("double", "dataset2", "dataset2", r, v) for r, v in ((0, 0.6), (1, 0.8))]
    data = _data(rows, cells)
    (grid,) = rp.table_grids(data)
    assert [b["strategy"] for b in grid["blocks"]] == ["scratch", "double"]  # pretrained was not planned
    by = {(b["strategy"], row["train"], c["test"]): c for b in grid["blocks"] for row in b["rows"]
          for c in row["cells"]}
    done = by[("scratch", "dataset1", "dataset1")]
    assert done["status"] == "done" and done["ours"]["mape_mean"] == pytest.approx(0.4)
    # far outside the paper's band, but the paper's Dataset1 diagonal is not like for like (its notes say why)
    assert done["delta"] == pytest.approx(0.4 - 0.82) and done["outside"] is False
    assert [n.id for n in done["notes"]] == ["diagonal-not-in-runs"] and done["like"] is False
    assert by[("scratch", "dataset1", "dataset2")]["status"] == "partial"
    assert by[("scratch", "dataset1", "dataset2")]["n_done"] == 1
    assert by[("scratch", "dataset2", "dataset1")]["status"] == "pending"
    assert by[("scratch", "dataset2", "dataset1")]["ours"] is None
    assert by[("scratch", "dataset1", "aflow")]["status"] == "not run"  # a test set nobody planned
    readme = by[("double", "dataset2", "dataset2")]
    assert readme["paper"][2] == "authors' repository README"
    assert len(data.missing) == 16 - 5

    html = rp.render(data, SECTIONS)
    assert re.search(r'class="empty"[^>]*data-strategy="scratch" data-train="dataset2" data-test="dataset1">'
                     r'pending \(0 of 2 splits\)', html)
    assert "1 of 2 splits" in html and "Incomplete" in html
    # a cell with a value shows it with the paper and the delta; a cell never run is not shown as zero
    assert '<span class="ours">0.40 (0.14)</span>' in html
    assert '<span class="delta">-0.42</span>' in html
    assert ">0.00 (" not in html


def test_cells_the_paper_does_not_have_are_marked_so():
    data = _data([_row("scratch", "dataset1", "dataset1", 0, 0.4, backbone="crabnet")],
                 [_cell("crabnet", "scratch", "dataset1", "dataset1", 0)])
    data.table[0]["strategy"] = data.rows[0]["strategy"] = "my-strategy"  # a third-party strategy
    data.runs[0]["strategies"] = ["my-strategy"]
    html = rp.render(data, SECTIONS)
    assert "not in paper" in html and '<span class="delta">' not in html


def test_heat_scale_separates_0_3_from_2_0():
    def rgb(v):
        h = rp.heat(v).lstrip("#")
        return [int(h[i:i + 2], 16) for i in (0, 2, 4)]

    assert rp.heat_position(0.3) < 0.4 < 0.9 < rp.heat_position(2.0)
    (r1, g1, _), (r2, g2, _) = rgb(0.3), rgb(2.0)
    assert g1 > r1 and r2 > g2  # greenish vs reddish
    assert sum(abs(a - b) for a, b in zip(rgb(0.3), rgb(2.0))) > 150
    positions = [rp.heat_position(v) for v in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)]
    assert positions == sorted(positions) and positions[0] == 0.0 and positions[-1] == 1.0


def test_packaged_paper_table_matches_the_reference_csv_and_cites_its_source(data_dir):
    shared = data_dir.parent / "reference" / "paper_table1.csv"
    if shared.exists():
        assert load_paper_table1(shared.read_text()) == PAPER_TABLE1
    assert len(PAPER_TABLE1) == 44
    assert PAPER_TABLE1[("double", "dataset1", "dataset1")] == (0.34, 0.15, "paper")
    assert sum(v[2] != "paper" for v in PAPER_TABLE1.values()) == 6
    assert "arXiv:2411.18259" in rp.PAPER_CITATION
    readme = Path(rp.__file__).parent / "reference" / "README.md"
    assert "arXiv:2411.18259" in readme.read_text()


def test_markdown_and_latex_exports_hold_the_same_grid():
    cells = [_cell("megnet", "scratch", "dataset1", te, r) for te in ("dataset1", "dataset2") for r in (0, 1)]
    rows = [_row("scratch", "dataset1", "dataset1", r, v) for r, v in ((0, 0.3), (1, 0.5))]
    data = _data(rows, cells)
    md = rp.table1_markdown(data)
    assert "| Step 1 scratch | Dataset1 | 0.40 (0.14) [0.82] | — [2.53] | — [2.16] |" in md
    tex = rp.table1_latex(data)
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lccc}"):
        assert cmd in tex
    assert r"Dataset1 & 0.40 (0.14) [0.82] & --- [2.53] & --- [2.16] \\" in tex
    assert rp._tex("a_b & 5% #1") == r"a\_b \& 5\% \#1"


def test_sections_can_be_added_and_a_table_alone_renders():
    cells = [_cell("megnet", "scratch", "dataset1", "dataset1", 0)]
    data = _data([_row("scratch", "dataset1", "dataset1", 0, 0.4)], cells)

    def extra(d):
        return f"<p id='extra-count'>{len(d.rows)} rows</p>"

    sections = sorted(SECTIONS + [rp.ReportSection("extra-test", "An extra study", extra, order=60)],
                      key=lambda s: s.order)
    html = rp.render(data, sections)
    assert '<a href="#extra-test">An extra study</a>' in html
    assert "<p id='extra-count'>1 rows</p>" in html
    assert html.index('id="table1"') < html.index('id="extra-test"') < html.index('id="provenance"')
    old = rp.render(ReportData(runs=[data.runs[0]], table=data.table), SECTIONS)
    assert 'data-strategy="scratch" data-train="dataset1" data-test="dataset1"' in old


def test_the_header_counts_planned_results_apart_from_extra_readings_and_baselines():
    cells = [_cell("megnet", "scratch", "dataset1", "dataset1", r) for r in (0, 1)]
    rows = [_row("scratch", "dataset1", "dataset1", 0, 0.4), _row("scratch", "dataset1", "dataset1", 0, 0.5,
                                                                    selection="last"),
            _row("constant", "dataset1", "dataset1", 0, 0.7, backbone="baseline")]
    html = rp.render(_data(rows, cells), SECTIONS)
    assert "1 of 2 planned (backbone, strategy, train, test, split) results available (3 rows" in html


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_report_merges_run_directories_and_needs_out_for_several(tmp_path, cli):
    a, b = tmp_path / "megnet", tmp_path / "other"
    for d, backbone, vals in ((a, "megnet", (0.3, 0.5)), (b, "other", (0.6, 0.4))):
        d.mkdir()
        _write_csv(d / "results.csv", [_row("scratch", "dataset1", "dataset1", r, v, backbone=backbone)
                                        for r, v in enumerate(vals)])
    code, _, err = cli("report", str(a), str(b))
    assert code == 2 and "--out" in err and "Traceback" not in err
    code, _, err = cli("report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.html"))
    assert code == 2 and "nowhere" in err
    out = tmp_path / "merged" / "report.html"
    code, stdout, err = cli("report", str(a), str(b), "--out", str(out))
    assert code == 0, err
    assert "4 results, 2 cells from 2 run(s)" in stdout
    for name in ("table1.md", "table1.tex", "table1.csv", "results.csv"):
        assert (out.parent / name).exists(), name
    html = out.read_text()
    # both backbones side by side, the lower mean (megnet 0.40 < other 0.50) highlighted
    assert 'id="backbones"' in html
    assert re.findall(r'class="bb-entry best" data-backbone="(\w+)"', html) == ["megnet"]
    # the paper's numbers are MEGNet's: said so under other backbones
    assert html.count("paper (MEGNet)") == 1
    table = list(csv.DictReader(open(out.parent / "table1.csv")))
    assert {t["backbone"] for t in table} == {"megnet", "other"}


def test_report_leaves_out_named_sections_and_writes_section_tables(tmp_path, cli):
    run = tmp_path / "run"
    run.mkdir()
    vals = {"scratch": (0.50, 0.60, 0.55), "pretrained": (0.40, 0.45, 0.50)}
    _write_csv(run / "results.csv", [dict(_row(s, "dataset1", "dataset1", r, v), spearman=0.1 * r)
                                      for s, per in vals.items() for r, v in enumerate(per)])
    out = tmp_path / "merged" / "report.html"
    code, _, err = cli("report", str(run), "--out", str(out), "--leave-out", "splits", "--leave-out", "nope")
    assert code == 2 and "--leave-out nope" in err and "splits" in err and not out.exists()
    code, _, err = cli("report", str(run), "--out", str(out), "--leave-out", "splits")
    assert code == 0, err
    html = out.read_text()
    assert 'id="splits"' not in html and 'href="#splits"' not in html and 'id="table1"' in html
    assert "Left out of this page" in html and "Per-split detail" in html
    # the paired comparisons of every metric in paired.csv; the page names the file
    assert 'href="paired.csv"' in html
    paired = list(csv.DictReader(open(out.parent / "paired.csv")))
    step2 = {c["metric"]: c for c in paired if (c["a"], c["b"]) == ("pretrained", "scratch")}
    assert set(step2) == {"mape", "spearman"}
    diffs = [b - a for a, b in zip(vals["scratch"], vals["pretrained"])]
    assert float(step2["mape"]["diff"]) == pytest.approx(statistics.mean(diffs))
    assert int(step2["mape"]["n"]) == 3


def test_a_section_table_may_not_take_another_file(tmp_path):
    from paraisite_bench.errors import UserError
    from paraisite_bench.outputs import write_report

    def table(d):
        return {"results.csv": [{"a": 1}]}

    sections = SECTIONS + [rp.ReportSection("greedy", "Greedy", lambda d: None, tables=table)]
    with pytest.raises(UserError, match="greedy.*results.csv.*the core"):
        write_report(_data([_row("scratch", "dataset1", "dataset1", 0, 0.4)], []), tmp_path / "r.html",
                     sections)
    assert not (tmp_path / "r.html").exists()


def test_best_backbone_is_the_lowest_mean(tmp_path):
    rows = [_row("scratch", "dataset1", "dataset1", r, v, backbone="megnet") for r, v in ((0, 0.3), (1, 0.5))]
    rows += [_row("scratch", "dataset1", "dataset1", r, v, backbone="crabnet")
             for r, v in ((0, 0.2), (1, 0.3))]
    rows += [_row("scratch", "dataset1", "dataset2", 0, 0.9, backbone="megnet")]
    rows += [_row("scratch", "dataset1", "dataset2", 0, 1.9, backbone="crabnet")]
    data = merge([LoadedRun(info={}, rows=rows)])
    (view,) = rp.backbone_comparison(data)
    (row,) = view["rows"]
    best = {c["test"]: [e["backbone"] for e in c["entries"] if e["best"]] for c in row["cells"]}
    assert best == {"dataset1": ["crabnet"], "dataset2": ["megnet"]}


def test_merge_counts_a_result_present_in_two_run_directories_once():
    rows = [_row("scratch", "dataset1", "dataset1", 0, 0.4)]
    data = merge([LoadedRun(info={}, rows=rows), LoadedRun(info={}, rows=rows)])
    assert len(data.rows) == 1 and data.table[0]["n_splits"] == 1


def test_runs_of_different_protocols_are_not_pooled():
    def item(epochs, selection="paper"):
        return LoadedRun(info={"dir": f"run-{epochs}-{selection}", "protocol": {"splits": 2, "epochs": epochs,
                                                                                "selection": selection}})

    from paraisite_bench.errors import UserError

    with pytest.raises(UserError, match=r"run-15-paper and run-300-paper ran different protocols "
                                        r"\(epochs 15 ≠ 300\)"):
        merge([item(15), item(300)])
    merge([item(15), item(15)])
    merge([item(15), item(300, "heldout")])  # separate grids per selection mode
