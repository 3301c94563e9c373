"""The legend "About the paper's numbers": the audit notes (:mod:`paraisite_bench.reference.annotations`)
that apply to at least one paper cell shown in Table I, each with its marker, a short explanation and links
to the lines of the authors' code it rests on. The Table I section shows the markers next to the cells."""

from __future__ import annotations

from paraisite_bench.reference.annotations import PAPER_NOTES, evidence_link, notes_for
from paraisite_bench.report import fragment
from paraisite_bench.results import ReportData

PACKAGE = "paraisite_report"


def paper_notes_section(data: ReportData) -> str | None:
    # a table row carries the paper's number only where aggregate() found one (MEGNet, MAPE, a cell the
    # paper reports): that decision has one owner, so a row without paper_mean is not a paper cell here
    cells = {(r["strategy"], r["train"], r["test"]) for r in data.table
             if r.get("paper_mean") not in ("", None)}
    counts: dict[str, int] = {}
    for cell in cells:
        for note_id in notes_for(*cell):
            counts[note_id] = counts.get(note_id, 0) + 1
    if not counts:
        return None
    notes = [{"note": n, "cells": counts[n.id], "links": [evidence_link(e) for e in n.evidence]}
             for n in sorted((PAPER_NOTES[i] for i in counts), key=lambda n: n.marker)]
    return fragment("section_paper_notes.html", package=PACKAGE, notes=notes, n_cells=len(cells))
