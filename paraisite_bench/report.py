"""The HTML report: one self-contained file built from one or more run directories.

The report is a list of *sections*. Each section is a function that takes the :class:`ReportData` of the
runs (results, Table I aggregate, curves, stages, provenance) and returns an HTML fragment, or ``None`` to
leave the section out. To add a section (e.g. a model-selection stability study)::

    from paraisite_bench.report import ReportData, fragment, section
    from paraisite_bench.figures import to_svg

    @section("stability", "Model-selection stability", order=60)
    def stability(data: ReportData) -> str | None:
        if not data.rows:
            return None
        return fragment("section_stability.html", data=data, ...)   # or any HTML string

and list the defining module in :data:`SECTION_MODULES` (it is imported before every render), or import it
yourself before calling :func:`render`. Sections appear ordered by ``order`` (Table I is 20, provenance 90)
with an entry in the report's table of contents. Fragments are inlined as they are: use Jinja2 templates
(:func:`fragment`, autoescaped) and inline SVG figures (:mod:`paraisite_bench.figures`) so that the file
stays self-contained — never link to an external URL, script, stylesheet or font. The returned string is
inlined unescaped; beware that ``Markup + str`` escapes the ``str`` (join plain strings, or render one template).
Figures: build a matplotlib figure and pass it to :func:`paraisite_bench.figures.to_svg` with a unique salt
(e.g. its title); element ids are then prefixed so that several figures can share the page.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .protocol import SELECTION_MODES
from .reference import (
    PAPER_BACKBONE,
    PAPER_CAVEATS,
    PAPER_CITATION,
    PAPER_TABLE1,
    PAPER_URL,
    README_SOURCE,
    STRATEGY_STEP,
)

DATASET_ORDER = ["dataset1", "dataset2", "mix", "aflow"]
STRATEGY_ORDER = ["scratch", "pretrained", "double"]
#: Modules that define extra sections with :func:`section`; imported before each render.
SECTION_MODULES: list[str] = ["paraisite_bench.study"]


def _order(names, order=DATASET_ORDER):
    return sorted(names, key=lambda n: (order.index(n) if n in order else 99, n))


def _rank(name: str) -> int:
    return DATASET_ORDER.index(name) if name in DATASET_ORDER else 99


#: The heat scale: logarithmic from HEAT_RANGE[0] (green) to HEAT_RANGE[1] (red), matplotlib's RdYlGn_r
#: lightened towards white so that the numbers stay readable.
HEAT_RANGE = (0.15, 2.5)


def heat_position(value: float) -> float:
    """Where ``value`` lies on the heat scale: 0 (≤ 0.15) … 1 (≥ 2.5), logarithmic."""
    lo, hi = (math.log10(v) for v in HEAT_RANGE)
    return min(max((math.log10(max(float(value), 1e-6)) - lo) / (hi - lo), 0.0), 1.0)


def heat(value: float) -> str:
    """Background colour of a MAPE value (0.3 is green-yellow, 2.0 red)."""
    import matplotlib

    r, g, b, _ = matplotlib.colormaps["RdYlGn_r"](heat_position(value))
    mix = 0.45  # towards white
    return "#%02x%02x%02x" % tuple(round(255 * (c + (1 - c) * mix)) for c in (r, g, b))


def compare(mean: float | None, paper: tuple | None) -> dict:
    """Our mean against the paper's (mean, std, source): difference and whether ours lies outside mean ± std."""
    if mean is None or not paper:
        return {"delta": None, "outside": False}
    delta = mean - paper[0]
    return {"delta": delta, "outside": abs(delta) > paper[1] + 1e-12}


# ---- the data every section reads -------------------------------------------------------------

@dataclass
class ReportData:
    """Everything the report shows, merged over run directories."""

    #: run.json of each run (plus "dir"); provenance comes from here
    runs: list[dict] = field(default_factory=list)
    #: results.csv rows: backbone, strategy, train, test, split, mape, n_test, best_epoch, selection, ...
    rows: list[dict] = field(default_factory=list)
    #: table1.csv rows (outputs.aggregate)
    table: list[dict] = field(default_factory=list)
    #: curves.csv rows: stage_key, stage, backbone, init, dataset, split, epoch, train_mape, val_mape, lr
    curves: list[dict] = field(default_factory=list)
    #: training stages: key, label, status, wall_s, finished, best_epoch, n_train, n_val, error, run
    stages: list[dict] = field(default_factory=list)
    #: records skipped at load time (skipped.csv)
    skipped: list[dict] = field(default_factory=list)
    #: model-selection studies (study.json of `select` run directories, plus "dir")
    studies: list[dict] = field(default_factory=list)
    #: planned (backbone, strategy, train, test, split) results that are not in the store
    missing: list[dict] = field(default_factory=list)
    generated: str = ""

    @property
    def labels(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for r in self.runs:
            out.update(r.get("labels", {}))
        return out

    @property
    def backbones(self) -> list[str]:
        names = {r["backbone"] for r in self.table}
        for run in self.runs:
            names |= set(run.get("backbones", []))
        return sorted(names)

    @property
    def strategies(self) -> list[str]:
        names = list(dict.fromkeys(s for run in self.runs for s in run.get("strategies", [])))
        extra = _order({r["strategy"] for r in self.table} - set(names), STRATEGY_ORDER)
        return names + extra if names else _order({r["strategy"] for r in self.table}, STRATEGY_ORDER)

    @property
    def trains(self) -> list[str]:
        return _order({r["train"] for r in self.table} | {t for run in self.runs for t in run.get("train", [])})

    @property
    def tests(self) -> list[str]:
        return _order({r["test"] for r in self.table} | {t for run in self.runs for t in run.get("test", [])})

    @property
    def selections(self) -> list[str]:
        return sorted({r["selection"] for r in self.table}) or ["paper"]

    @property
    def planned_splits(self) -> int | None:
        splits = {run.get("protocol", {}).get("splits") for run in self.runs} - {None}
        return max(splits) if splits else None

    def planned(self) -> dict[tuple, int]:
        """(backbone, strategy, train, test) -> number of splits planned, over every run."""
        out: dict[tuple, set] = defaultdict(set)
        for run in self.runs:
            for c in run.get("cells", []):
                out[(c["backbone"], c["strategy"], c["train"], c["test"])].add(c["split"])
        return {k: len(v) for k, v in out.items()}


def table_grids(data: ReportData) -> list[dict]:
    """Table I as grids, one per backbone × selection mode: strategy blocks of train rows × test columns;
    each cell with our aggregate (or None), the paper's number, the difference and the outside mark."""
    planned = data.planned()
    grids = []
    for backbone in data.backbones:
        sels = sorted({r["selection"] for r in data.table if r["backbone"] == backbone}) or ["-"]
        for selection in sels:
            rows = [r for r in data.table if r["backbone"] == backbone and r["selection"] == selection]
            cells = {(r["strategy"], r["train"], r["test"]): r for r in rows}
            strategies = [s for s in data.strategies
                          if any(k[0] == s for k in cells) or any(k[:2] == (backbone, s) for k in planned)]
            tests = data.tests
            blocks = []
            for s in strategies:
                block_rows = []
                for tr in data.trains:
                    line = []
                    for te in tests:
                        ours = cells.get((s, tr, te))
                        paper = PAPER_TABLE1.get((s, tr, te))
                        n_planned = planned.get((backbone, s, tr, te), 0)
                        n_done = int(ours["n_splits"]) if ours else 0
                        status = ("done" if ours and n_done >= n_planned else "partial" if ours
                                  else "pending" if n_planned else "not run")
                        line.append({"test": te, "ours": ours, "paper": paper, "n_planned": n_planned,
                                     "n_done": n_done, "status": status,
                                     **compare(float(ours["mape_mean"]) if ours else None, paper)})
                    if any(c["ours"] or c["n_planned"] for c in line):
                        block_rows.append({"train": tr, "cells": line})
                if block_rows:
                    blocks.append({"strategy": s, "step": STRATEGY_STEP.get(s, ""), "rows": block_rows,
                                   "description": _strategy_description(data, s),
                                   "caveat": PAPER_CAVEATS.get(s, "")})
            grids.append({"backbone": backbone, "selection": selection,
                          "selection_text": SELECTION_MODES.get(selection, ""), "tests": tests, "blocks": blocks})
    return grids


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
    backbones = sorted({r["backbone"] for r in data.table})
    for selection in data.selections:
        for s in data.strategies:
            rows = []
            for tr in data.trains:
                line = []
                for te in data.tests:
                    entries = [r for r in data.table if (r["selection"], r["strategy"], r["train"], r["test"])
                               == (selection, s, tr, te)]
                    by = {r["backbone"]: r for r in entries}
                    best = min(entries, key=lambda r: float(r["mape_mean"]))["backbone"] if len(entries) > 1 else None
                    line.append({"test": te, "entries": [{"backbone": b, "row": by.get(b), "best": b == best}
                                                         for b in backbones]})
                if any(any(e["row"] for e in c["entries"]) for c in line):
                    rows.append({"train": tr, "cells": line})
            if rows:
                out.append({"selection": selection, "strategy": s, "step": STRATEGY_STEP.get(s, ""), "rows": rows})
    return out


# ---- sections ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Section:
    key: str
    title: str
    render: Callable[[ReportData], "str | None"]
    order: int = 50


SECTIONS: dict[str, Section] = {}


def section(key: str, title: str, order: int = 50):
    """Register ``fn(data: ReportData) -> str | None`` as a report section (a later registration with the
    same key replaces the earlier one)."""

    def deco(fn):
        SECTIONS[key] = Section(key, title, fn, order)
        return fn

    return deco


_ENV: Environment | None = None


def environment() -> Environment:
    global _ENV
    if _ENV is None:
        env = Environment(loader=PackageLoader("paraisite_bench", "templates"), autoescape=select_autoescape(
            default_for_string=True, default=True), trim_blocks=True, lstrip_blocks=True)
        env.filters["heat"] = heat
        env.filters["f2"] = lambda v: "" if v in (None, "") else f"{float(v):.2f}"
        env.filters["signed"] = lambda v: "" if v is None else f"{float(v):+.2f}"
        env.filters["duration"] = _duration
        env.globals.update(STRATEGY_STEP=STRATEGY_STEP, PAPER_CITATION=PAPER_CITATION, PAPER_URL=PAPER_URL,
                           README_SOURCE=README_SOURCE, caveats=PAPER_CAVEATS)
        _ENV = env
    return _ENV


def fragment(template: str, **context) -> Markup:
    """Render a template of ``paraisite_bench/templates`` to an HTML fragment."""
    return Markup(environment().get_template(template).render(**context))


def _duration(seconds) -> str:
    if seconds in (None, ""):
        return "—"
    s = float(seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


@section("notes", "Notes on the data", order=15)
def _notes_section(data: ReportData):
    """What a run warned about once (e.g. formulas a composition backbone cannot tell apart)."""
    notes = list(dict.fromkeys(n for run in data.runs for n in (run.get("notes") or [])))
    if not notes:
        return None
    return fragment("section_notes.html", notes=notes)


@section("table1", "Table I: MAPE per backbone, next to the paper", order=20)
def _table1_section(data: ReportData):
    if not data.table and not data.missing and data.studies:
        return None  # a `select` directory alone: no Table I to show
    return fragment("section_table1.html", grids=table_grids(data), data=data, labels=data.labels,
                    paper_backbone=PAPER_BACKBONE,
                    legend=[(v, heat(v)) for v in (0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)])


@section("backbones", "Backbones side by side", order=30)
def _backbones_section(data: ReportData):
    backbones = sorted({r["backbone"] for r in data.table})
    if len(backbones) < 2:
        return None
    return fragment("section_backbones.html", views=backbone_comparison(data), backbones=backbones,
                    tests=data.tests, labels=data.labels)


@section("curves", "Learning curves", order=40)
def _curves_section(data: ReportData):
    from .figures import group_curves, learning_curves

    if not data.curves:
        return None
    grouped = group_curves(data.rows, data.curves)
    figs = []
    for backbone in sorted({r["backbone"] for r in data.rows}):
        for selection in sorted({r["selection"] for r in data.rows if r["backbone"] == backbone}):
            curves = {(s, tr): v for (b, sel, s, tr), v in grouped.items() if (b, sel) == (backbone, selection)}
            svg = learning_curves(curves, [s for s in data.strategies if any(k[0] == s for k in curves)],
                                  data.trains, data.labels,
                                  f"{backbone} — validation MAPE per epoch (selection: {selection})")
            if svg:
                figs.append({"backbone": backbone, "selection": selection, "svg": Markup(svg)})
    return fragment("section_curves.html", figs=figs) if figs else None


@section("splits", "Per-split detail", order=50)
def _splits_section(data: ReportData):
    from .figures import selected_epochs, split_strips

    if not data.rows:
        return None
    views = []
    for backbone in sorted({r["backbone"] for r in data.rows}):
        for selection in sorted({r["selection"] for r in data.rows if r["backbone"] == backbone}):
            rows = [r for r in data.rows if (r["backbone"], r["selection"]) == (backbone, selection)]
            values: dict[tuple, list[float]] = defaultdict(list)
            for r in rows:
                values[(r["strategy"], r["train"], r["test"])].append(float(r["mape"]))
            strategies = [s for s in data.strategies if any(r["strategy"] == s for r in rows)]
            svg = split_strips(values, PAPER_TABLE1, strategies, data.trains, data.tests, data.labels,
                               f"{backbone} — MAPE of each split (selection: {selection}); "
                               "black square: paper mean ± std")
            chosen: dict[tuple, dict] = {}
            for r in rows:  # one selected epoch per stage (a stage answers several test columns)
                if r.get("best_epoch") not in (None, ""):
                    chosen[(r["strategy"], r["train"], r["stage_key"])] = int(r["best_epoch"])
            picked: dict[tuple, list[int]] = defaultdict(list)
            for (s, tr, _key), e in chosen.items():
                picked[(s, tr)].append(e)
            epochs_svg = selected_epochs(picked, _stage_epochs(data, rows), strategies, data.trains, data.labels,
                                         f"{backbone} — selected epoch of each split (selection: {selection}); "
                                         "dashed: epochs trained")
            detail = sorted(rows, key=lambda r: (strategies.index(r["strategy"]), _rank(r["train"]), r["train"],
                                                 int(r["split"]), _rank(r["test"]), r["test"]))
            views.append({"backbone": backbone, "selection": selection,
                          "selection_text": SELECTION_MODES.get(selection, ""),
                          "svg": Markup(svg) if svg else None, "rows": detail,
                          "epochs_svg": Markup(epochs_svg) if epochs_svg else None})
    return fragment("section_splits.html", views=views, labels=data.labels)


def _stage_epochs(data: ReportData, rows: list[dict]) -> dict[tuple, int]:
    """(strategy, train) -> epochs of the evaluated stage, from the stage table or the run's protocol."""
    by_key = {s["key"]: s.get("epochs") for s in data.stages}
    out = {}
    for r in rows:
        e = by_key.get(r["stage_key"])
        if e is None:
            for run in data.runs:
                proto = run.get("protocol") or {}
                e = (proto.get("stage_epochs") or {}).get(r["train"], proto.get("epochs"))
                if e:
                    break
        if e:
            out[(r["strategy"], r["train"])] = int(e)
    return out


@section("provenance", "Provenance and completeness", order=90)
def _provenance_section(data: ReportData):
    by_cell: dict[tuple, int] = defaultdict(int)
    for m in data.missing:
        by_cell[(m["backbone"], m["strategy"], m["train"], m["test"])] += 1
    failed = [s for s in data.stages if s.get("status") == "failed"]
    return fragment("section_provenance.html", data=data, missing=sorted(by_cell.items()), failed=failed,
                    stages=sorted(data.stages, key=lambda s: (s.get("run", ""), s.get("label", ""))),
                    total_stage_s=sum(float(s["wall_s"] or 0) for s in data.stages if s.get("wall_s")))


def active_sections() -> list[Section]:
    for mod in SECTION_MODULES:
        importlib.import_module(mod)
    return sorted(SECTIONS.values(), key=lambda s: (s.order, s.key))


def render(data: ReportData, sections: list[Section] | None = None) -> str:
    """The whole report as one self-contained HTML string."""
    if not data.generated:
        data.generated = dt.datetime.now().isoformat(timespec="seconds")
    parts = []
    for sec in sections if sections is not None else active_sections():
        html = sec.render(data)
        if html:
            parts.append({"key": sec.key, "title": sec.title, "html": Markup(html)})
    n_planned = sum(len(run.get("cells", [])) for run in data.runs)
    return environment().get_template("report.html").render(
        data=data, sections=parts, n_rows=len(data.rows), n_cells=n_planned,
        title=", ".join(str(r.get("out", r.get("dir", ""))) for r in data.runs) or "results")


def render_report(table: list[dict], run_info: dict, n_rows: int, n_cells: int) -> str:
    """Backward-compatible entry: a report from a Table I aggregate and a run.json alone (no per-split
    rows, curves or stages: those sections are left out). Prefer :func:`render` with :func:`load_runs`."""
    return render(ReportData(runs=[run_info], table=table))


# ---- exports of the grid ----------------------------------------------------------------------

def _cell_text(c: dict) -> str:
    if not c["ours"]:
        return "—"
    txt = f"{float(c['ours']['mape_mean']):.2f} ({float(c['ours']['mape_std']):.2f})"
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
                out.append(f"| {step} | {labels.get(row['train'], row['train'])} | " + " | ".join(cells) + " |")
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
                r"Train $\backslash$ Test & " + " & ".join(_tex(labels.get(t, t)) for t in g["tests"]) + r" \\"]
        for b in g["blocks"]:
            out.append(r"\midrule")
            out.append(rf"\multicolumn{{{n + 1}}}{{l}}{{\textit{{{_tex((b['step'] + ': ') if b['step'] else '')}"
                       rf"{_tex(b['strategy'])}}}}} \\")
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


# ---- loading run directories ------------------------------------------------------------------

def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _typed_result(r: dict) -> dict:
    r = dict(r)
    r["mape"] = float(r["mape"])
    for k in ("split", "n_test", "best_epoch"):
        if r.get(k) not in (None, ""):
            r[k] = int(r[k])
    return r


def load_run(run_dir: Path) -> dict:
    """One run directory's rows, curves, stages and skipped records, from its store (or, when the store is
    gone, from its CSV outputs). Never trains anything."""
    from .errors import UserError
    from .outputs import curve_rows, result_rows, stage_rows
    from .store import Store

    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    info.setdefault("dir", str(run_dir))
    skipped = _read_csv(run_dir / "skipped.csv")
    study_path = run_dir / "study.json"
    study = dict(json.loads(study_path.read_text()), dir=str(run_dir)) if study_path.exists() else None
    if study is not None and not info_path.exists():  # a `select` run directory: the study only
        info.update(kind="select", protocol=None, notes=study.get("notes", []), command=study.get("command"),
                    started=study.get("started"), finished=study.get("finished"), wall_s=study.get("wall_s"))
        return {"info": info, "rows": [], "curves": [], "stages": [], "skipped": skipped, "study": study}
    if info.get("cells") is not None and (run_dir / "store.sqlite").exists():
        store = Store(run_dir / "store.sqlite")
        try:
            rows = result_rows(info["cells"], store)
            keys = info.get("stages", sorted({c["stage_key"] for c in info["cells"]}))
            curves = curve_rows(keys, store)
            stages = stage_rows(keys, store)
        finally:
            store.close()
        source = "store"
    elif (run_dir / "results.csv").exists():
        rows = [_typed_result(r) for r in _read_csv(run_dir / "results.csv")]
        curves = _read_csv(run_dir / "curves.csv")
        stages = []
        source = "csv"
    else:
        raise UserError(f"{run_dir} is not a run directory (no run.json with store.sqlite, no results.csv): "
                        "give the --out folder of a run")
    info["report_source"] = source
    for s in stages:
        s["run"] = str(run_dir)
    return {"info": info, "rows": rows, "curves": curves, "stages": stages, "skipped": skipped, "study": study}


def merge(loaded: list[dict]) -> ReportData:
    """Merge run directories; a result present in several (same stage and test) counts once."""
    from .outputs import aggregate

    check_protocols([item["info"] for item in loaded])
    data = ReportData()
    seen_rows, seen_curves, seen_stages, seen_skipped = set(), set(), set(), set()
    for item in loaded:
        data.runs.append(item["info"])
        for r in item["rows"]:
            k = (r["stage_key"], r["test"], r["strategy"], r["train"])
            if k not in seen_rows:
                seen_rows.add(k)
                data.rows.append(r)
        for c in item["curves"]:
            k = (c["stage_key"], str(c["epoch"]))
            if k not in seen_curves:
                seen_curves.add(k)
                data.curves.append(c)
        for s in item["stages"]:
            if s["key"] not in seen_stages:
                seen_stages.add(s["key"])
                data.stages.append(s)
        if item.get("study"):
            data.studies.append(item["study"])
        for s in item["skipped"]:
            k = (s.get("dataset"), s.get("id"))
            if k not in seen_skipped:
                seen_skipped.add(k)
                data.skipped.append(s)
    data.table = aggregate(data.rows)
    have = {(r["backbone"], r["strategy"], r["train"], r["test"], int(r["split"])) for r in data.rows}
    for run in data.runs:
        for c in run.get("cells", []):
            if (c["backbone"], c["strategy"], c["train"], c["test"], c["split"]) not in have:
                data.missing.append(c)
    return data


def check_protocols(infos: list[dict]) -> None:
    """Runs merged into one Table I must share their protocol within a selection mode (each selection mode
    has its own grid); otherwise a cell would pool, say, 15-epoch and 300-epoch results."""
    from .errors import UserError

    first: dict[str, tuple[str, dict]] = {}
    for info in infos:
        proto = info.get("protocol")
        if not proto:
            continue
        sel = proto.get("selection", "paper")
        rest = {k: v for k, v in proto.items() if k != "selection"}
        name = str(info.get("dir", info.get("out", "?")))
        if sel not in first:
            first[sel] = (name, rest)
            continue
        other, ref = first[sel]
        diff = [f"{k} {ref.get(k)!r} ≠ {rest.get(k)!r}" for k in sorted(set(ref) | set(rest))
                if ref.get(k) != rest.get(k)]
        if diff:
            raise UserError(f"{other} and {name} ran different protocols ({'; '.join(diff)}): their results "
                            "cannot share a Table I; merge runs of one protocol (one run directory per backbone)")


def load_runs(run_dirs) -> ReportData:
    return merge([load_run(Path(d)) for d in run_dirs])


def write_report(data: ReportData, out: Path) -> dict[str, Path]:
    """Write report.html (at ``out``) with table1.md and table1.tex next to it; return the paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = {"html": out, "md": out.parent / "table1.md", "tex": out.parent / "table1.tex"}
    for kind, text in (("html", render(data)), ("md", table1_markdown(data)), ("tex", table1_latex(data))):
        tmp = paths[kind].with_name(paths[kind].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[kind])
    return paths
