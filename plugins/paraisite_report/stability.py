"""The report section of the model-selection stability study (``paraisite-bench select``, the paper's
Fig. 2): the ranked candidates, a plot of every repeat and the notes, for each study.json among the runs."""

from __future__ import annotations

from paraisite_bench.report import fragment
from paraisite_bench.results import ReportData
from paraisite_bench.study import plot_svg


def render_html(study: dict, svg: str | None = None) -> str:
    """One study (the content of its study.json) as an HTML fragment; ``svg``: its plot, drawn when None."""
    if svg is None:
        svg = plot_svg(study["runs"], study["ranked"], study["dataset_label"], study["rule"],
                       salt=f"study:{study.get('dir', '')}")
    return fragment("section_stability.html", package="paraisite_report", studies=[dict(study, svg=svg)])


def stability_section(data: ReportData) -> str | None:
    if not data.studies:
        return None
    return "".join(render_html(st) for st in data.studies)
