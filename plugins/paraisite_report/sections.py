"""The sections of a Table I report: notes, Table I, backbones side by side, learning curves, per-split
detail and provenance. Each takes the :class:`~paraisite_bench.results.ReportData` of the runs and returns
an HTML fragment, or ``None`` when it has nothing to show."""

from __future__ import annotations

from collections import defaultdict

from markupsafe import Markup

from paraisite_bench.protocol import SELECTION_MODES
from paraisite_bench.reference import PAPER_BACKBONE, PAPER_TABLE1
from paraisite_bench.report import backbone_comparison, fragment, heat, table_grids
from paraisite_bench.results import BASELINE, ReportData, metric_value

PACKAGE = "paraisite_report"
HEAT_LEGEND = (0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5)


def notes_section(data: ReportData) -> str | None:
    """What a run warned about once (e.g. formulas a composition backbone cannot tell apart)."""
    notes = list(dict.fromkeys(n for run in data.runs for n in (run.get("notes") or [])))
    if not notes:
        return None
    return fragment("section_notes.html", package=PACKAGE, notes=notes)


def table1_section(data: ReportData) -> str | None:
    if not data.table and not data.missing and data.studies:
        return None  # a `select` directory alone: no Table I to show
    return fragment("section_table1.html", package=PACKAGE, grids=table_grids(data), data=data,
                    labels=data.labels, paper_backbone=PAPER_BACKBONE, metric_names=data.metrics,
                    legend=[(v, heat(v)) for v in HEAT_LEGEND])


def backbones_section(data: ReportData) -> str | None:
    backbones = sorted({r["backbone"] for r in data.table} - {BASELINE})  # trained models only
    if len(backbones) < 2:
        return None
    return fragment("section_backbones.html", package=PACKAGE, views=backbone_comparison(data),
                    backbones=backbones, tests=data.tests, labels=data.labels)


def curves_section(data: ReportData) -> str | None:
    # figures imports matplotlib: only when a report is rendered, not in every process that loads the plugins
    from paraisite_bench.figures import group_curves, learning_curves

    if not data.curves:
        return None
    grouped = group_curves(data.rows, data.curves)
    figs = []
    for backbone in data.backbones:
        # selection modes that read the same stages (a paper run's `paper` and `last`) share one figure:
        # the curves are the stages', whatever epoch a mode then scores
        by_stages: dict[frozenset, list[str]] = defaultdict(list)
        for selection in sorted({r["selection"] for r in data.rows if r["backbone"] == backbone},
                                key=lambda sel: (sel == "last", sel)):
            keys = frozenset(r["stage_key"] for r in data.rows if (r["backbone"], r["selection"])
                             == (backbone, selection))
            by_stages[keys].append(selection)
        for selections in by_stages.values():
            curves = {(s, tr): v for (b, sel, s, tr), v in grouped.items()
                      if b == backbone and sel == selections[0]}
            label = ", ".join(selections)
            svg = learning_curves(curves, [s for s in data.strategies if any(k[0] == s for k in curves)],
                                  data.trains, data.labels,
                                  f"{backbone} — validation MAPE per epoch (selection: {label})")
            if svg:
                figs.append({"backbone": backbone, "selection": label, "svg": Markup(svg)})
    return fragment("section_curves.html", package=PACKAGE, figs=figs) if figs else None


def splits_section(data: ReportData) -> str | None:
    if not data.rows:
        return None
    views = [_split_view(data, backbone, selection)
             for backbone in data.backbones
             for selection in sorted({r["selection"] for r in data.rows if r["backbone"] == backbone})]
    return fragment("section_splits.html", package=PACKAGE, views=views, labels=data.labels,
                    metrics=" / ".join(m.upper() for m in data.metrics))


def _split_view(data: ReportData, backbone: str, selection: str) -> dict:
    """One backbone × selection mode: the value of each split (strips) and the epoch each split's model was
    selected at; the per-split rows themselves are results.csv's (a 9-split grid holds thousands)."""
    from paraisite_bench.figures import selected_epochs, split_strips  # matplotlib: see curves_section

    rows = [r for r in data.rows if (r["backbone"], r["selection"]) == (backbone, selection)]
    values: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        values[(r["strategy"], r["train"], r["test"])].append(metric_value(r))
    strategies = [s for s in data.strategies if any(r["strategy"] == s for r in rows)]
    svg = split_strips(values, PAPER_TABLE1, strategies, data.trains, data.tests, data.labels,
                       f"{backbone} — MAPE of each split (selection: {selection}); "
                       "black square: paper mean ± std")
    chosen: dict[tuple, int] = {}
    for r in rows:  # one selected epoch per stage (a stage answers several test columns); `last` selects none
        if r.get("epoch") not in (None, "") and selection != "last":
            chosen[(r["strategy"], r["train"], r["stage_key"])] = int(r["epoch"])
    picked: dict[tuple, list[int]] = defaultdict(list)
    for (s, tr, _key), e in chosen.items():
        picked[(s, tr)].append(e)
    epochs_svg = selected_epochs(picked, _stage_epochs(data, rows), strategies, data.trains, data.labels,
                                 f"{backbone} — selected epoch of each split (selection: {selection}); "
                                 "dashed: epochs trained")
    return {"backbone": backbone, "selection": selection,
            "selection_text": SELECTION_MODES.get(selection, ""), "svg": Markup(svg) if svg else None,
            "n_rows": len(rows), "epochs_svg": Markup(epochs_svg) if epochs_svg else None}


def _stage_epochs(data: ReportData, rows: list[dict]) -> dict[tuple, int]:
    """(strategy, train) -> epochs of the evaluated stage, from the stage table or the run's protocol."""
    by_key = {s["key"]: s.get("epochs") for s in data.stages}
    out = {}
    for r in rows:
        e = by_key.get(r["stage_key"])
        if e is None:
            for run in data.runs:
                proto = run.get("protocol") or {}
                per_dataset = (proto.get("stage_options") or {}).get(r["train"], {}).get("epochs")
                # run.json written before per-dataset stage options kept the epochs alone
                e = per_dataset or (proto.get("stage_epochs") or {}).get(r["train"], proto.get("epochs"))
                if e:
                    break
        if e:
            out[(r["strategy"], r["train"])] = int(e)
    return out


def provenance_section(data: ReportData) -> str | None:
    by_cell: dict[tuple, int] = defaultdict(int)
    for m in data.missing:
        by_cell[(m["backbone"], m["strategy"], m["train"], m["test"])] += 1
    failed = [s for s in data.stages if s.get("status") == "failed"]
    stages = sorted(data.stages, key=lambda s: (s.get("run", ""), s.get("label", "")))
    return fragment("section_provenance.html", package=PACKAGE, data=data, missing=sorted(by_cell.items()),
                    failed=failed, stages=stages,
                    total_stage_s=sum(float(s["wall_s"] or 0) for s in data.stages if s.get("wall_s")))
