"""A third party's plugin module for the report tests, loaded with ``--plugin report_plugin_for_tests``:
a report section (the count and mean of the results, per metric) and a dataset whose target is not κ
(log10 κ of 40 Dataset1 records, a regression target scored by MAE)."""

from __future__ import annotations

import math

from markupsafe import escape

from paraisite_bench import hookimpl
from paraisite_bench.data import DatasetSpec, Record, read_ltc_json, regression_target
from paraisite_bench.report import ReportSection
from paraisite_bench.results import headline_metrics, metric_of, metric_value


def results_summary(data):
    """One line per metric: how many results and their mean, with 6 decimals (the tests recompute them)."""
    if not data.rows:
        return None
    lines = []
    for metric in headline_metrics(data.rows):
        values = [metric_value(r) for r in data.rows if metric_of(r) == metric]
        lines.append(f"<li data-metric='{escape(metric)}'>{len(values)} results, mean {metric} "
                     f"{sum(values) / len(values):.6f}</li>")
    return f"<ul class='results-summary'>{''.join(lines)}</ul>"


@hookimpl
def register_report_sections(register):
    register(ReportSection(name="results-summary", title="Results at a glance", render=results_summary,
                           order=25))


def _log_kappa(ctx):
    _doc, records = read_ltc_json(ctx.path("ltc", "dataset1.json.gz"), "d1_logk")
    return [Record(r.id, r.formula, math.log10(r.value), r.cif, r.source) for r in records[:40]]


@hookimpl
def register_datasets(register):
    register(DatasetSpec(name="d1_logk", description="log10 κ of 40 Dataset1 records", loader=_log_kappa,
                         target=regression_target("log10_kappa", "log10 W/(m K)")))
