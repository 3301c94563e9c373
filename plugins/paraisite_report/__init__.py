"""The built-in sections of report.html, registered through the ``register_report_sections`` hook exactly as
a third-party plugin registers its own: notes on the data, Table I next to the paper, what the paper's numbers
rest on, backbones side by side, learning curves, per-split detail, the model-selection stability study of
``select``, provenance.
Their templates are this package's ``templates/`` folder (rendered with
``paraisite_bench.report.fragment(name, package="paraisite_report", ...)``)."""

from __future__ import annotations

from paraisite_bench import hookimpl
from paraisite_bench.report import ReportSection

from .paired import paired_section, paired_tables
from .paper_notes import paper_notes_section
from .sections import (
    backbones_section,
    curves_section,
    notes_section,
    provenance_section,
    splits_section,
    table1_section,
)
from .selection import selection_section
from .stability import stability_section


@hookimpl
def register_report_sections(register):
    register(ReportSection("notes", "Notes on the data", notes_section, order=15))
    register(ReportSection("table1", "Table I: MAPE per backbone, next to the paper", table1_section,
                           order=20))
    # right after Table I, whose paper numbers carry this legend's markers
    register(ReportSection("paper-notes", "About the paper's numbers", paper_notes_section, order=21))
    register(ReportSection("paired", "Uncertainty: strategies compared split by split", paired_section,
                           order=22, tables=paired_tables))
    register(ReportSection("selection", "Selection optimism and every metric", selection_section, order=23))
    register(ReportSection("backbones", "Backbones side by side", backbones_section, order=30))
    register(ReportSection("curves", "Learning curves", curves_section, order=40))
    register(ReportSection("splits", "Per-split detail", splits_section, order=50))
    register(ReportSection("stability", "Model-selection stability (Fig. 2)", stability_section, order=60))
    register(ReportSection("provenance", "Provenance and completeness", provenance_section, order=90))
