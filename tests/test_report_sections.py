"""Report sections are a plugin hook: a third party's module adds one with ``--plugin`` and it appears in the
report of a real small run; the built-in sections (the stability study of ``select`` among them) come through
the same hook; result columns are named by the metric they hold (``mape`` for κ, ``mae`` for other
targets)."""

from __future__ import annotations

import csv
import re
import statistics
import textwrap

import pytest
from conftest import SMALL
from markupsafe import escape
from report_plugin_for_tests import _log_kappa

from paraisite_bench import hookspecs
from paraisite_bench.data import LoadContext
from paraisite_bench.plugins import load_registry
from paraisite_bench.report import ordered_sections, render
from paraisite_bench.results import load_runs

#: the columns of a κ-only run, as every earlier version wrote them
KAPPA_RESULT_HEADER = ("backbone,strategy,train,test,split,seed,mape,mae_log,spearman,r2_log,n_test,epoch,"
                       "selection,chain,weights_loaded,stage_key,leak_formula,leak_structure")
KAPPA_TABLE_HEADER = ("backbone,strategy,train,test,selection,"
                      + ",".join(f"{m}_{s}" for m in ("mape", "mae_log", "spearman", "r2_log")
                                 for s in ("mean", "std", "ci_low", "ci_high"))
                      + ",n_splits,n_seeds,paper_mean,paper_std,paper_source,leak_formula,leak_structure")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _summary_line(html: str, metric: str) -> tuple[int, float]:
    m = re.search(rf"<li data-metric='{metric}'>(\d+) results, mean {metric} ([0-9.]+)</li>", html)
    assert m, f"no {metric} line in the plugin's section"
    return int(m.group(1)), float(m.group(2))


@pytest.fixture(scope="module")
def kappa_run(tmp_path_factory):
    """Dataset1 only, scratch, 2 splits × 2 epochs, with the test plugin loaded."""
    from paraisite_bench.cli import main

    out = tmp_path_factory.mktemp("sections") / "run"
    try:
        main(["run", *SMALL, "--strategies", "scratch", "--train", "dataset1", "--test", "dataset1",
              "--plugin", "report_plugin_for_tests", "--baselines", "none", "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code, f"run failed with exit status {exc.code}"
    return out


def test_a_plugin_section_appears_in_the_report_of_a_real_run(kappa_run, cli):
    html = (kappa_run / "report.html").read_text()
    rows = _rows(kappa_run / "results.csv")
    assert len(rows) == 4  # 2 splits, each read at its selected and at its last epoch
    assert '<a href="#results-summary">Results at a glance</a>' in html
    n, mean = _summary_line(html, "mape")
    assert n == 4 and mean == pytest.approx(statistics.mean(float(r["mape"]) for r in rows), abs=1e-6)
    # its place in the page follows its order (25): after Table I (20), before the curves (40)
    assert html.index('id="table1"') < html.index('id="results-summary"') < html.index('id="curves"')
    # `report` without the plugin leaves it out; with --plugin the section is back
    code, _, err = cli("report", str(kappa_run))
    assert code == 0, err
    assert 'id="results-summary"' not in (kappa_run / "report.html").read_text()
    code, _, err = cli("report", str(kappa_run), "--plugin", "report_plugin_for_tests")
    assert code == 0, err
    assert 'id="results-summary"' in (kappa_run / "report.html").read_text()


def test_a_kappa_only_run_keeps_its_columns(kappa_run):
    assert (kappa_run / "results.csv").read_text().splitlines()[0] == KAPPA_RESULT_HEADER
    assert (kappa_run / "table1.csv").read_text().splitlines()[0] == KAPPA_TABLE_HEADER


def test_the_register_report_sections_example_runs(kappa_run, tmp_path, monkeypatch, cli):
    code = textwrap.dedent(hookspecs.register_report_sections.__doc__.split("Runnable example::", 1)[1])
    (tmp_path / "example_sections.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "merged" / "report.html"
    code_, _, err = cli("report", str(kappa_run), "--plugin", "example_sections", "--out", str(out))
    assert code_ == 0, err
    html = out.read_text()
    assert '<a href="#slowest">Slowest training stages</a>' in html
    stages = sorted(load_runs([kappa_run]).stages, key=lambda s: -float(s["wall_s"]))
    expected = "".join(f"<li>{escape(s['label'])}: {float(s['wall_s']):.1f} s</li>" for s in stages)
    assert len(stages) == 2 and f"<ol class='slowest'>{expected}</ol>" in html


def test_built_in_sections_come_through_the_hook():
    reg = load_registry()
    names = [s.name for s in ordered_sections(reg)]
    assert names == ["notes", "table1", "paper-notes", "paired", "selection", "backbones", "curves", "splits",
                     "stability",
                     "provenance"]
    assert {reg.providers[("section", n)] for n in names} == {"report"}
    assert reg.sections["stability"].plugin == "report"


def test_the_stability_study_section_of_a_select_directory(cli, tmp_path):
    out = tmp_path / "sel"
    code, _, err = cli("select", "--candidates", "megnet:eform", "--dataset", "dataset1", "--repeats", "1",
                       "--epochs", "1", "--no-progress", "--out", str(out))
    assert code == 0, err
    html = (out / "report.html").read_text()
    assert 'id="stability"' in html and 'data-candidate="megnet:eform"' in html
    # the section is the registered one: rendering without it leaves the study out
    data = load_runs([out])
    without = [s for s in ordered_sections(load_registry()) if s.name != "stability"]
    assert 'id="stability"' not in render(data, without)


def test_a_regression_target_writes_mae_columns(cli, tmp_path, data_dir):
    """A dataset whose target is not κ: its results sit in an ``mae`` column, κ results stay in ``mape``, and
    the Table I means and stds are those of the per-split values."""
    out = tmp_path / "mixed"
    code, _, err = cli("run", *SMALL, "--plugin", "report_plugin_for_tests", "--strategies", "scratch",
                       "--train", "d1_logk", "--test", "d1_logk,dataset1", "--epochs", "1", "--baselines",
                       "none", "--out", str(out))
    assert code == 0, err
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    # the headlines first (MAPE for κ, MAE for the other target), then the further metrics of both kinds
    assert header[6:12] == ["mape", "mae", "mae_log", "spearman", "r2_log", "r2"]
    assert header[:6] == KAPPA_RESULT_HEADER.split(",")[:6]
    rows = [r for r in _rows(out / "results.csv") if r["selection"] == "paper"]
    by_test = {t: [r for r in rows if r["test"] == t] for t in ("d1_logk", "dataset1")}
    assert all(r["mae"] and not r["mape"] for r in by_test["d1_logk"]) and len(by_test["d1_logk"]) == 2
    assert all(r["mape"] and not r["mae"] for r in by_test["dataset1"]) and len(by_test["dataset1"]) == 2
    values = [r.value for r in _log_kappa(LoadContext(data_dir))]
    spread = max(values) - min(values)
    assert all(0 < float(r["mae"]) < spread for r in by_test["d1_logk"])
    table = {t["test"]: t for t in _rows(out / "table1.csv") if t["selection"] == "paper"}
    assert list(table["d1_logk"])[5:13] == [f"{m}_{s}" for m in ("mape", "mae")
                                            for s in ("mean", "std", "ci_low", "ci_high")]
    maes = [float(r["mae"]) for r in by_test["d1_logk"]]
    assert float(table["d1_logk"]["mae_mean"]) == pytest.approx(statistics.mean(maes), abs=1e-6)
    assert float(table["d1_logk"]["mae_std"]) == pytest.approx(statistics.stdev(maes), abs=1e-6)
    assert table["d1_logk"]["mape_mean"] == "" and table["dataset1"]["mae_mean"] == ""
    # the report rebuilt from the CSVs alone (store gone) reads the metric of each row back
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("results.csv", "curves.csv", "skipped.csv"):
        (copy / name).write_text((out / name).read_text())
    code, _, err = cli("report", str(copy), "--out", str(tmp_path / "rebuilt" / "report.html"))
    assert code == 0, err
    assert _rows(tmp_path / "rebuilt" / "table1.csv") == _rows(out / "table1.csv")
    html = (out / "report.html").read_text()
    assert "MAPE / MAE" in html

