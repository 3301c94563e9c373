"""The HTML report: one self-contained file rendered from a :class:`~paraisite_bench.results.ReportData`
(built by :mod:`paraisite_bench.results`), plus Table I as Markdown and LaTeX. Nothing here loads data.

The page is a list of *sections*, each a :class:`ReportSection` registered through the
``register_report_sections`` hook (:mod:`paraisite_bench.hookspecs`) — the built-in ones (Table I, curves,
per-split detail, provenance, the stability study of ``select``…) by the ``paraisite_report`` plugin, exactly
as a third party's. Callers pass the sections to render, usually ``ordered_sections(registry)``.

A section's ``render(data)`` returns an HTML fragment, or ``None`` to leave the section out; fragments are
inlined as they are. Keep the file self-contained: render Jinja2 templates with :func:`fragment` (autoescaped;
a plugin names its own package to use its ``templates/`` folder) and inline SVG figures
(:func:`paraisite_bench.figures.to_svg`, with a unique salt so that several figures can share the page);
never link to an external URL, script, stylesheet or font. Beware that ``Markup + str`` escapes the ``str``
(join plain strings, or render one template).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Callable

from jinja2 import ChoiceLoader, Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .parts import splits_text
from .protocol import SELECTION_MODES
from .reference import PAPER_CAVEATS, PAPER_CITATION, PAPER_TABLE1, PAPER_URL, README_SOURCE, STRATEGY_STEP
from .reference.annotations import PAPER_NOTES, like_for_like, notes_for
from .results import BASELINE, PAPER_METRIC, ReportData, metric_value, table_mean, table_std

#: The heat scale: logarithmic from HEAT_RANGE[0] (green) to HEAT_RANGE[1] (red), matplotlib's RdYlGn_r
#: lightened towards white so that the numbers stay readable.
HEAT_RANGE = (0.15, 2.5)


def heat_position(value: float) -> float:
    """Where ``value`` lies on the heat scale: 0 (≤ 0.15) … 1 (≥ 2.5), logarithmic."""
    lo, hi = (math.log10(v) for v in HEAT_RANGE)
    return min(max((math.log10(max(float(value), 1e-6)) - lo) / (hi - lo), 0.0), 1.0)


def heat(value: float) -> str:
    """Background colour of a MAPE value (0.3 is green-yellow, 2.0 red)."""
    # matplotlib is imported here, not at the top: plugins.py imports this module (for ReportSection) in
    # every worker process, which never renders
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["RdYlGn_r"](heat_position(value))
    mix = 0.45  # towards white
    return "#%02x%02x%02x" % tuple(round(255 * (c + (1 - c) * mix)) for c in (r, g, b))


def row_heat(table_row: dict) -> str:
    """Background of a Table I cell: the heat of its MAPE; none for other metrics (their scale has units)."""
    if table_row.get("metric", PAPER_METRIC) != PAPER_METRIC:
        return "transparent"
    return heat(table_mean(table_row))


def compare(mean: float | None, paper: tuple | None, like: bool = True) -> dict:
    """Our mean against the paper's (mean, std, source): the difference, and whether ours lies outside
    the paper's mean ± std — flagged only where the comparison is ``like`` for like
    (:func:`paraisite_bench.reference.annotations.like_for_like`)."""
    if mean is None or not paper:
        return {"delta": None, "outside": False}
    delta = mean - paper[0]
    return {"delta": delta, "outside": like and abs(delta) > paper[1] + 1e-12}


def paper_cell(s: str, tr: str, te: str) -> dict:
    """The paper's number for a cell, the notes on how it was produced, and whether it is like for like."""
    return {"paper": PAPER_TABLE1.get((s, tr, te)), "like": like_for_like(s, tr, te),
            "notes": [PAPER_NOTES[n] for n in notes_for(s, tr, te)]}


def _grid_cell(cells: dict, planned: dict, backbone: str, s: str, tr: str, te: str) -> dict:
    """One Table I cell: our aggregate (or None), its completeness, the paper's number and notes."""
    ours = cells.get((s, tr, te))
    ref = paper_cell(s, tr, te)
    n_planned = planned.get((backbone, s, tr, te), 0)
    n_done = int(ours["n_splits"]) if ours else 0
    status = ("done" if ours and n_done >= n_planned else "partial" if ours
              else "pending" if n_planned else "not run")
    return {"test": te, "ours": ours, "n_planned": n_planned, "n_done": n_done, "status": status,
            "leak": leak_of(ours), **ref,
            **compare(table_mean(ours) if ours else None, ref["paper"], ref["like"])}


def leak_of(row: dict | None) -> dict | None:
    """A Table I row's leakage (mean over splits of the test records whose formula / structure a stage of
    the chain trained on), or None when it has none or was not audited."""
    if not row:
        return None
    formula, structure = (float(row.get(k) or 0) for k in ("leak_formula", "leak_structure"))
    return {"formula": formula, "structure": structure} if formula or structure else None


def table_grids(data: ReportData) -> list[dict]:
    """Table I as grids, one per backbone × selection mode: strategy blocks of train rows × test columns;
    each cell with our aggregate (or None), the paper's number, the difference and the outside mark."""
    planned = data.planned()
    # the runs' own selection modes first (a paper run's `last` reading comes after its `paper` grid)
    headline = {(run.get("protocol") or {}).get("selection") for run in data.runs}
    grids = []
    for backbone in data.backbones:
        sels = sorted({r["selection"] for r in data.table if r["backbone"] == backbone},
                      key=lambda s: (s not in headline, s)) or ["-"]
        for selection in sels:
            rows = [r for r in data.table if r["backbone"] == backbone and r["selection"] == selection]
            cells = {(r["strategy"], r["train"], r["test"]): r for r in rows}
            strategies = [s for s in data.strategies
                          if any(k[0] == s for k in cells) or any(k[:2] == (backbone, s) for k in planned)]
            tests = data.tests
            blocks = [_block(data, cells, planned, backbone, s) for s in strategies]
            grids.append({"backbone": backbone, "selection": selection,
                          "starting_point": _starting_point(data, backbone),
                          "selection_text": SELECTION_MODES.get(selection, ""), "tests": tests,
                          "blocks": [b for b in blocks if b["rows"]],
                          "baselines": _baseline_blocks(data, selection)})
    return grids


def _block(data: ReportData, cells: dict, planned: dict, backbone: str, s: str,
           baseline: bool = False) -> dict:
    """One strategy's (or baseline's) train rows × test columns of a Table I grid."""
    rows = []
    for tr in data.trains:
        line = [_grid_cell(cells, planned, backbone, s, tr, te) for te in data.tests]
        if baseline:  # a baseline has no paper number and nothing planned: only the cells it has
            line = [dict(c, paper=None, notes=[], delta=None, outside=False) for c in line]
        if any(c["ours"] or c["n_planned"] for c in line):
            rows.append({"train": tr, "cells": line})
    return {"strategy": s, "step": "" if baseline else STRATEGY_STEP.get(s, ""), "rows": rows,
            "description": _strategy_description(data, s), "baseline": baseline}


def _baseline_blocks(data: ReportData, selection: str) -> list[dict]:
    """The baselines' blocks of a grid (the same in every backbone's grid: baselines train no model)."""
    rows = [r for r in data.table if r["backbone"] == BASELINE and r["selection"] == selection]
    cells = {(r["strategy"], r["train"], r["test"]): r for r in rows}
    names = sorted({r["strategy"] for r in rows})
    blocks = [_block(data, cells, {}, BASELINE, name, baseline=True) for name in names]
    return [b for b in blocks if b["rows"]]


def _starting_point(data: ReportData, backbone: str) -> str:
    """What Steps 2 and 3 of ``backbone`` start from (run.json ``starting_points``), or ""."""
    for run in data.runs:
        text = (run.get("starting_points") or {}).get(backbone)
        if text:
            return text
    return ""


def _strategy_description(data: ReportData, s: str) -> str:
    for run in data.runs:
        d = run.get("strategy_descriptions", {}).get(s)
        if d:
            return d
    return ""


def backbone_comparison(data: ReportData) -> list[dict]:
    """Per selection × strategy: train rows × test columns, each cell listing every backbone's mean (std),
    the best (lowest mean MAPE) marked."""
    out = []
    backbones = sorted({r["backbone"] for r in data.table} - {BASELINE})
    for selection in data.selections:
        for s in data.strategies:
            rows = []
            for tr in data.trains:
                line = []
                for te in data.tests:
                    entries = [r for r in data.table if (r["selection"], r["strategy"], r["train"], r["test"])
                               == (selection, s, tr, te)]
                    by = {r["backbone"]: r for r in entries}
                    best = min(entries, key=table_mean)["backbone"] if len(entries) > 1 else None
                    line.append({"test": te, "entries": [{"backbone": b, "row": by.get(b), "best": b == best}
                                                         for b in backbones]})
                if any(any(e["row"] for e in c["entries"]) for c in line):
                    rows.append({"train": tr, "cells": line})
            if rows:
                out.append({"selection": selection, "strategy": s, "step": STRATEGY_STEP.get(s, ""),
                            "rows": rows})
    return out


# ---- sections ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportSection:
    """One section of report.html, registered with the ``register_report_sections`` hook.

    ``name`` is the section's key: its HTML id and table-of-contents anchor (unique over all plugins);
    ``render(data)`` returns an HTML fragment or ``None`` (the section is left out); sections appear in
    ascending ``order`` (notes 15, Table I 20, backbones 30, curves 40, per-split detail 50, stability 60,
    provenance 90). ``plugin`` is filled in by the registry with the name of the plugin that provides it.

    ``tables(data)``, when given, returns CSV tables to write beside report.html, ``{file name: rows}``
    (each row a dict; the first row's keys are the columns): detail too long for the page (a 9-split grid
    of two backbones under two protocols holds thousands of rows), which the fragment then names by file.
    """

    name: str
    title: str
    render: Callable[[ReportData], "str | None"]
    order: int = 50
    plugin: str = ""
    tables: "Callable[[ReportData], dict[str, list[dict]]] | None" = None

    @property
    def key(self) -> str:
        return self.name


def ordered_sections(registry) -> list[ReportSection]:
    """The sections of a plugin registry (:class:`paraisite_bench.plugins.Registry`) in page order."""
    return sorted(registry.sections.values(), key=lambda s: (s.order, s.name))


_ENVIRONMENTS: dict[str, Environment] = {}


def templates(package: str = "paraisite_bench") -> Environment:
    """The Jinja2 environment of ``package``'s ``templates/`` folder (falling back on the core's), with the
    report's filters (``heat``, ``row_heat``, ``f2``, ``signed``, ``duration``, ``mean``, ``std``, ``value``)
    and globals (the paper's citation, caveats and step names). A plugin that renders its own templates ships
    them in ``<its package>/templates/`` (as package data) and calls :func:`fragment` with its package."""
    if package not in _ENVIRONMENTS:
        loaders = [PackageLoader(package, "templates")]
        if package != "paraisite_bench":
            loaders.append(PackageLoader("paraisite_bench", "templates"))
        env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(
            default_for_string=True, default=True), trim_blocks=True, lstrip_blocks=True)
        env.filters.update(heat=heat, row_heat=row_heat, duration=_duration, mean=table_mean, std=table_std,
                           value=metric_value)
        env.filters["f2"] = lambda v: "" if v in (None, "") else f"{float(v):.2f}"
        env.filters["splits"] = splits_text
        env.filters["signed"] = lambda v: "" if v is None else f"{float(v):+.2f}"
        env.globals.update(STRATEGY_STEP=STRATEGY_STEP, PAPER_CITATION=PAPER_CITATION, PAPER_URL=PAPER_URL,
                           README_SOURCE=README_SOURCE, caveats=PAPER_CAVEATS)
        _ENVIRONMENTS[package] = env
    return _ENVIRONMENTS[package]


def fragment(template: str, /, package: str = "paraisite_bench", **context) -> Markup:
    """Render ``template`` of ``package``'s ``templates/`` folder (see :func:`templates`) to an HTML
    fragment."""
    return Markup(templates(package).get_template(template).render(**context))


def _duration(seconds) -> str:
    if seconds in (None, ""):
        return "—"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def render(data: ReportData, sections: list[ReportSection], left_out: list[str] = ()) -> str:
    """The whole report as one self-contained HTML string, with ``sections`` in the order given; the titles
    in ``left_out`` are named as sections left out of the page."""
    if not data.generated:
        data.generated = dt.datetime.now().isoformat(timespec="seconds")
    parts = []
    for sec in sections:
        html = sec.render(data)
        if html:
            parts.append({"key": sec.name, "title": sec.title, "html": Markup(html)})
    # a planned result is one (backbone, strategy, train, test, split); rows also hold each extra reading
    # (`last`) and the baselines, so they are counted apart
    keys = ("backbone", "strategy", "train", "test", "split")
    planned = {tuple(str(c[k]) for k in keys) for run in data.runs for c in run.get("cells", [])}
    done = planned & {tuple(str(r[k]) for k in keys) for r in data.rows}
    return templates().get_template("report.html").render(
        data=data, sections=parts, left_out=list(left_out), n_rows=len(data.rows), n_cells=len(planned),
        n_done=len(done),
        title=", ".join(str(r.get("out", r.get("dir", ""))) for r in data.runs) or "results")


# ---- exports of the grid ----------------------------------------------------------------------

def _cell_text(c: dict) -> str:
    if not c["ours"]:
        return "—"
    txt = f"{table_mean(c['ours']):.2f} ({table_std(c['ours']):.2f})"
    if c["status"] == "partial":
        txt += f" n={c['n_done']}/{c['n_planned']}"
    return txt


def table1_markdown(data: ReportData) -> str:
    """Table I as Markdown: per backbone × selection, one row per strategy × train dataset; each cell
    "mean (std)" over splits, the paper's mean in brackets where it has the cell."""
    labels = data.labels
    out = [f"<!-- paraisite-bench Table I, generated {data.generated or dt.date.today().isoformat()} -->", ""]
    for g in table_grids(data):
        out.append(f"### {g['backbone']} — selection: {g['selection']}")
        out.append("")
        out.append("MAPE as a fraction, mean (sample std) over splits; [paper mean] from " + PAPER_CITATION
                   + "; — not run.")
        out.append("")
        out.append("| Step | Train \\ Test | " + " | ".join(labels.get(t, t) for t in g["tests"]) + " |")
        out.append("|---|---|" + "---|" * len(g["tests"]))
        for b in g["blocks"]:
            for i, row in enumerate(b["rows"]):
                step = f"{b['step']} {b['strategy']}".strip() if i == 0 else ""
                cells = []
                for c in row["cells"]:
                    t = _cell_text(c)
                    if c["paper"]:
                        t += f" [{c['paper'][0]:.2f}]"
                    cells.append(t)
                train = labels.get(row["train"], row["train"])
                out.append(f"| {step} | {train} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
    return s.replace("\x00", r"\textbackslash{}")


def table1_latex(data: ReportData) -> str:
    """Table I as LaTeX (``booktabs``): one tabular per backbone × selection."""
    labels = data.labels
    out = ["% paraisite-bench Table I; needs \\usepackage{booktabs}",
           "% MAPE as a fraction, mean (sample std) over splits; [paper mean] from arXiv:2411.18259 Table I"]
    for g in table_grids(data):
        n = len(g["tests"])
        out += [r"\begin{table}[ht]", r"\centering", r"\small",
                rf"\caption{{{_tex(g['backbone'])}, selection: {_tex(g['selection'])}. MAPE mean (std) over "
                rf"splits; paper's mean in brackets.}}",
                r"\begin{tabular}{l" + "c" * n + "}", r"\toprule",
                r"Train $\backslash$ Test & " + " & ".join(_tex(labels.get(t, t)) for t in g["tests"])
                + r" \\"]
        for b in g["blocks"]:
            out.append(r"\midrule")
            step = _tex((b["step"] + ": ") if b["step"] else "")
            out.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{step}{_tex(b['strategy'])}}}}} \\")
            for row in b["rows"]:
                cells = []
                for c in row["cells"]:
                    t = _tex(_cell_text(c)).replace("—", "---")
                    if c["paper"]:
                        t += f" [{c['paper'][0]:.2f}]"
                    cells.append(t)
                out.append(_tex(labels.get(row["train"], row["train"])) + " & " + " & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)

