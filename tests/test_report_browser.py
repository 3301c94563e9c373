"""The report of a small real run, opened in headless Debian Chromium: Table I cells and paper deltas are in
the DOM (expected values computed here from results.csv), nothing is requested outside the file, figures are
inline SVG, and a screenshot is saved. Tampered reports must fail the same check."""

from __future__ import annotations

import csv
import math
import os
import shutil
from pathlib import Path

import pytest
from conftest import SMALL
from report_browser import (
    browser_missing,
    check_table1,
    chromium,
    expected_cells,
    open_report,
    outside_requests,
    read_paper,
)

REASON = browser_missing()
if REASON and os.environ.get("CI") == "true":
    raise RuntimeError(f"browser test cannot run in CI: {REASON}")  # a collection error fails CI
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"browser test skipped: {REASON}")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, data_dir, cache_dir):
    """The quick preset cut down: MEGNet, 2 splits, 2 epochs, Dataset2 and AFLOW subsampled; Dataset1 and
    Dataset2 as training and test sets; scratch and double (so the chain and the paper's README cells
    show)."""
    from paraisite_bench.cli import main

    os.environ["PARAISITE_BENCH_DATA"] = str(data_dir)
    os.environ["PARAISITE_BENCH_CACHE"] = str(cache_dir)
    out = tmp_path_factory.mktemp("browser") / "run"
    try:
        main(["run", *SMALL, "--subsample", "aflow=60,dataset2=40", "--strategies", "scratch,double",
              "--train", "dataset1,dataset2", "--test", "dataset1,dataset2", "--out", str(out)])
    except SystemExit as exc:
        assert not exc.code, f"run failed with exit status {exc.code}"
    return out


@pytest.fixture(scope="module")
def browser():
    with chromium() as (ctx, requests):
        yield ctx, requests


@pytest.fixture(scope="module")
def paper():
    return read_paper()


def test_report_in_chromium(small_run, browser, paper, tmp_path_factory):
    ctx, requests = browser
    html = small_run / "report.html"
    expected = expected_cells(small_run / "results.csv", paper)
    models = [k for k in expected if k[0] == "megnet"]
    # strategies × train × test, read at the selected (paper) and at the last epoch
    assert len(models) == 2 * 2 * 2 * 2 and {k[1] for k in models} == {"paper", "last"}
    # three baselines on every train × test, next to the models of both readings
    assert sorted({k[2] for k in expected if k[0] == "baseline"}) == ["constant", "knn", "nearest-structure"]
    assert len(expected) - len(models) == 3 * 2 * 2 * 2
    requests.clear()
    page = open_report(ctx, html)
    assert check_table1(page, expected) == []
    # every delta of the grid is in the DOM; the paper's notes have their legend
    assert page.locator("table.table1 .delta").count() == sum(1 for e in expected.values() if e["paper"])
    assert page.locator("table.table1 td.baseline").count() == len(expected) - len(models)
    assert "No published weights loaded" in page.locator("#paper-notes").inner_text()
    # figures are inline SVG: one learning-curve figure for both readings (they read the same stages),
    # per-split strips per reading (+ selected epochs for paper)
    selections = page.locator("#curves figure").evaluate_all("fs => fs.map(f => f.dataset.selection)")
    assert selections == ["paper, last"]
    assert page.locator("#curves svg.fig").count() == 1
    assert page.locator("#splits svg.fig").count() == 3
    # several inline figures in one page: element ids stay unique and every internal reference resolves
    duplicates, dangling, n_refs = page.evaluate("""() => {
        const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
        const refs = [...document.querySelectorAll('use, [clip-path], a[href^="#"]')].map(e =>
            (e.getAttribute('href') || e.getAttribute('xlink:href') || e.getAttribute('clip-path') || '')
            .replace(/^url\\(#|^#|\\)$/g, '')).filter(r => r);
        return [ids.length - new Set(ids).size, refs.filter(r => !document.getElementById(r)).length,
                refs.length]; }""")
    assert (duplicates, dangling) == (0, 0) and n_refs > 10
    # protocol caveats and the source of the paper's numbers sit next to them
    table1 = page.locator("#table1").inner_text()
    assert "arXiv:2411.18259" in table1
    assert "validation labels" in table1
    # the selection mode is labelled with the per-split detail; provenance names the command and versions
    assert "Selection mode paper" in page.locator("#splits").inner_text()
    prov = page.locator("#provenance").inner_text()
    assert "command" in prov and "torch" in prov and "Complete" in prov and "Data checksums" in prov
    shot = tmp_path_factory.mktemp("artifacts") / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page.close()
    assert outside_requests(requests, html) == [], "the report made requests outside its own file"
    assert requests, "no request recorded at all: the recorder is not working"


def _tamper_results(run: Path, dest: Path) -> tuple:
    """A copy of the run's CSV outputs (no store) with one split's MAPE raised by 0.5; the report is
    rebuilt from the CSVs. Returns the key of the changed cell."""
    dest.mkdir()
    for name in ("results.csv", "curves.csv", "skipped.csv"):
        shutil.copy(run / name, dest / name)
    rows = list(csv.DictReader(open(run / "results.csv")))
    rows[0]["mape"] = str(float(rows[0]["mape"]) + 0.5)
    with open(dest / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = rows[0]
    return (r["backbone"], r["selection"], r["strategy"], r["train"], r["test"])


@pytest.mark.parametrize("tamper", ["result", "delta", "paper"])
def test_a_wrong_cell_fails_the_check(small_run, browser, paper, tmp_path, cli, tamper):
    """The DOM check catches a wrong number: a changed result (report rebuilt from tampered CSVs), or an
    edited delta / paper value in the HTML."""
    ctx, _ = browser
    expected = expected_cells(small_run / "results.csv", paper)
    if tamper == "result":
        key = _tamper_results(small_run, tmp_path / "tampered")
        code, _, err = cli("report", str(tmp_path / "tampered"))
        assert code == 0, err
        html = tmp_path / "tampered" / "report.html"
    else:
        text = (small_run / "report.html").read_text()
        cls = "delta" if tamper == "delta" else "paper-value"
        start = text.index(f'<span class="{cls}">') + len(f'<span class="{cls}">')
        end = text.index("</span>", start)
        wrong = "+9.99" if tamper == "delta" else "9.99 (0.01)"
        text = text[:start] + wrong + text[end:]
        cell_start = text.rindex("<td ", 0, start)
        attrs = text[cell_start:start]
        key = next(k for k in expected
                   if f'data-strategy="{k[2]}" data-train="{k[3]}" data-test="{k[4]}"' in attrs)
        html = tmp_path / "report.html"
        html.write_text(text)
    page = open_report(ctx, html)
    problems = check_table1(page, expected)
    page.close()
    assert problems and all(p.startswith(str(key)) for p in problems), problems


def test_a_request_leaving_the_file_is_caught(small_run, browser, tmp_path):
    """The request recorder sees what a report would fetch (so an empty record means something)."""
    ctx, requests = browser
    text = (small_run / "report.html").read_text()
    html = tmp_path / "leaky.html"
    html.write_text(text.replace("</body>", '<img src="http://192.0.2.1/pixel.png"></body>'))
    requests.clear()
    page = open_report(ctx, html)
    page.close()
    assert outside_requests(requests, html) == ["http://192.0.2.1/pixel.png"]


def test_a_partial_run_renders_what_is_done_and_what_is_missing(small_run, browser, paper, tmp_path, cli):
    """Drop one stage's evaluations from a copy of the store (as an interrupted run leaves it): the rebuilt
    report shows the remaining split of those cells, marks them partial and lists what is missing."""
    import sqlite3

    part = tmp_path / "partial"
    shutil.copytree(small_run, part, ignore=shutil.ignore_patterns("checkpoints"))
    rows = list(csv.DictReader(open(small_run / "results.csv")))
    victim = next(r for r in rows if r["strategy"] == "double" and r["split"] == "1")
    con = sqlite3.connect(part / "store.sqlite")
    with con:
        con.execute("DELETE FROM evals WHERE stage_key=?", (victim["stage_key"],))
    con.close()
    code, out, err = cli("report", str(part))
    assert code == 0, err
    expected = expected_cells(part / "results.csv", paper)
    ctx, _ = browser
    page = open_report(ctx, part / "report.html")
    assert check_table1(page, expected) == []
    partial = page.locator(f'td.partial[data-strategy="double"][data-train="{victim["train"]}"]')
    # 2 test columns, in the paper and the last grid
    assert partial.count() == 2 * 2 and "1 of 2 splits" in partial.first.inner_text()
    prov = page.locator("#provenance").inner_text()
    assert "Incomplete" in prov and "2 planned result(s) missing" in prov
    page.close()


_METRIC_CELLS = """() => Array.from(document.querySelectorAll('table.metrics td[data-metric]')).map(td => {
    const tr = td.closest('tr').dataset;
    return [tr.backbone, tr.strategy, tr.train, tr.test, tr.selection, td.dataset.metric, td.dataset.mean];
})"""
_OPTIMISM_ROWS = """() => Array.from(document.querySelectorAll('table.optimism tr[data-diff]')).map(
    tr => [tr.dataset.backbone, tr.dataset.strategy, tr.dataset.train, tr.dataset.test, tr.dataset.diff])"""


def test_metrics_and_selection_optimism_in_chromium(small_run, browser):
    """The table of every metric and the paper − last optimism, in the DOM, against results.csv."""
    ctx, _ = browser
    rows = list(csv.DictReader(open(small_run / "results.csv")))
    page = open_report(ctx, small_run / "report.html")
    shown = page.evaluate(_METRIC_CELLS)
    optimism = page.evaluate(_OPTIMISM_ROWS)
    page.close()
    assert len(shown) == 4 * len({tuple(r[k] for k in ("backbone", "strategy", "train", "test", "selection"))
                                  for r in rows})
    for b, s, tr, te, sel, metric, mean in shown:
        vals = [float(r[metric]) for r in rows if (r["backbone"], r["strategy"], r["train"], r["test"],
                                                  r["selection"]) == (b, s, tr, te, sel)]
        vals = [v for v in vals if not math.isnan(v)]
        if vals:
            assert float(mean) == pytest.approx(sum(vals) / len(vals), abs=1e-5), (b, s, tr, te, sel, metric)
        else:  # e.g. the Spearman correlation of a constant: undefined
            assert mean == ""
    assert len(optimism) == 2 * 2 * 2  # every model cell has both readings
    for b, s, tr, te, diff in optimism:
        by = {(r["selection"], r["split"]): float(r["mape"]) for r in rows
              if (r["backbone"], r["strategy"], r["train"], r["test"]) == (b, s, tr, te)}
        splits = {sp for _, sp in by}
        expected = sum(by[("paper", sp)] - by[("last", sp)] for sp in splits) / len(splits)
        assert float(diff) == pytest.approx(expected, abs=1e-9)
