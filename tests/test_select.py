"""The model-selection stability study (`paraisite-bench select`), at a reduced budget."""

from __future__ import annotations

import csv
import json
import re
import sqlite3
import xml.etree.ElementTree as ET

import pytest
from paraisite_report.stability import render_html

from paraisite_bench.errors import UserError
from paraisite_bench.study import parse_rule, rank

CANDIDATES = "megnet:eform,megnet:bandgap,crabnet:expt_gap,crabnet:elasticity_log10_kvrh"


@pytest.fixture(autouse=True)
def _tiny_crabnet(monkeypatch):
    monkeypatch.setenv("PARAISITE_BENCH_CRABNET", "d_model=32,N=1,heads=2,dim_feedforward=64")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_select_four_candidates_ranked_with_plot_and_shared_pretraining(cli, tmp_path):
    out = tmp_path / "sel"
    args = ["select", "--candidates", CANDIDATES, "--dataset", "dataset1", "--repeats", "2", "--epochs", "2",
            "--pretrain-epochs", "1", "--pretrain-batch-size", "64",
            "--subsample", "expt_gap=150,elasticity_log10_kvrh=150", "--rule", "mean+0.5*std",
            "--no-progress", "--out", str(out)]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    ranked = _rows(out / "study.csv")
    assert sorted(r["candidate"] for r in ranked) == sorted(CANDIDATES.split(","))
    assert [int(r["rank"]) for r in ranked] == [1, 2, 3, 4]
    scores = [float(r["score"]) for r in ranked]
    assert scores == sorted(scores)
    for r in ranked:
        assert int(r["n"]) == 2 and r["rule"] == "mean+0.5*std"
        assert float(r["score"]) == pytest.approx(float(r["mean"]) + 0.5 * float(r["std"]))
        assert float(r["worst"]) >= float(r["mean"])
    runs = _rows(out / "study_runs.csv")
    assert len(runs) == 8
    # the same split r for every candidate; the seed varies with the repeat
    for r in runs:
        assert int(r["split"]) == int(r["repeat"]) and int(r["seed"]) == 42 + int(r["repeat"])
    ET.fromstring((out / "study.svg").read_text())  # a well-formed SVG
    html = (out / "report.html").read_text()  # the study is a section of the run directory's report
    assert 'class="t1 study"' in html and "mean+0.5*std" in html and "<svg" in html
    in_page = [html.index(f'data-candidate="{r["candidate"]}"') for r in ranked]
    assert in_page == sorted(in_page)  # ranked order in the page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # self-contained: nothing fetched
    study = json.loads((out / "study.json").read_text())
    assert study["candidates"]["megnet:bandgap"]["backbone"] == "megnet_bandgap"
    assert any("26 formulas" in n for n in study["notes"])
    # published weights really loaded, strictly; pretraining stages trained once and shared by repeats
    db = sqlite3.connect(out / "store.sqlite")
    stages = [(json.loads(s), json.loads(w or "{}"))
              for s, w in db.execute("SELECT spec, weights_info FROM stages")]
    db.close()
    pre = [s for s, _ in stages if s["dataset"] != "dataset1"]
    assert sorted(s["dataset"] for s in pre) == ["elasticity_log10_kvrh", "expt_gap"]
    loaded = {s["init"]: w for s, w in stages if s["init"].startswith("weights:")}
    assert loaded["weights:bandgap"]["tensors_loaded"] == loaded["weights:bandgap"]["tensors_total"] == 107
    assert loaded["weights:eform"]["tensors_loaded"] == loaded["weights:eform"]["tensors_total"] == 106
    assert len(stages) == 2 + 4 * 2
    # resumable: nothing retrained, the same table
    code, stdout, _ = cli(*args)
    assert code == 0 and "0 stages trained" in stdout
    assert _rows(out / "study.csv") == ranked
    code, stdout, _ = cli(*args, "--report")  # outputs from the store alone
    assert code == 0 and "10 reused" in stdout and _rows(out / "study.csv") == ranked


def test_rules_rank_differently_and_bad_rules_are_one_line(cli):
    per = {"steady": [0.40, 0.41, 0.42], "jumpy": [0.20, 0.30, 0.70]}
    assert [r["candidate"] for r in rank(per, "mean")] == ["jumpy", "steady"]
    assert [r["candidate"] for r in rank(per, "mean+1*std")] == ["steady", "jumpy"]
    assert [r["candidate"] for r in rank(per, "worst")] == ["steady", "jumpy"]
    row = rank(per, "median")[0]
    assert row["candidate"] == "jumpy" and row["cv"] == pytest.approx(row["std"] / row["mean"])
    assert parse_rule("Mean + 2*std") == ("mean", 2.0)
    with pytest.raises(UserError):
        parse_rule("lowest")
    assert "jumpy" in render_html({"dataset_label": "D", "repeats": 3, "repeats_vary": "split",
                                   "rule": "mean", "selection": "paper", "epochs": 1,
                                   "ranked": rank(per, "mean")}, svg="")
    code, _out, err = cli("select", "--candidates", "megnet:eform", "--rule", "best", "--repeats", "1")
    assert code == 2 and err.count("\n") == 1 and "--rule 'best'" in err


@pytest.mark.parametrize("candidate, message", [
    ("megnet", "expected BACKBONE:SOURCE"),
    ("crabnet:eform", "neither a published-weights source"),
    ("megnet:expt_gap", "compositions only"),
    ("nonet:eform", "unknown backbone"),
])
def test_bad_candidates_are_one_line(cli, tmp_path, candidate, message):
    code, _out, err = cli("select", "--candidates", candidate, "--repeats", "1", "--epochs", "1",
                          "--out", str(tmp_path / "x"))
    assert code == 2 and message in err and err.count("\n") == 1
