"""Report benchmark: rebuild the HTML report (Table I, figures, provenance) from a committed run's CSVs.

Run: ``make benchmark`` (or ``pytest benchmarks --benchmark-only -k report``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paraisite_bench.plugins import load_registry
from paraisite_bench.report import ordered_sections, render
from paraisite_bench.results import load_runs

REPORTS = Path(__file__).resolve().parents[1] / "reports"


@pytest.mark.parametrize("name", ["quick", "paper-dataset1"])
def test_render_report_from_csvs(benchmark, name):
    if not (REPORTS / name / "results.csv").exists():
        pytest.skip(f"reports/{name} is not committed")
    sections = ordered_sections(load_registry())
    html = benchmark.pedantic(lambda: render(load_runs([REPORTS / name]), sections), rounds=3, iterations=1)
    benchmark.extra_info["html_bytes"] = len(html)
