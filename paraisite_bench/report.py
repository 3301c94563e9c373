"""The HTML report: Table I per backbone, side by side with the paper's numbers."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, select_autoescape

from .protocol import SELECTION_MODES
from .reference import PAPER_CAVEATS, PAPER_TABLE1, STRATEGY_STEP

DATASET_ORDER = ["dataset1", "dataset2", "mix", "aflow"]


def _order(names):
    return sorted(names, key=lambda n: (DATASET_ORDER.index(n) if n in DATASET_ORDER else 99, n))


def heat(value: float) -> str:
    """Background colour on a log scale: 0.1 green … 0.5 yellow … 2.0+ red."""
    import math

    x = min(max((math.log10(max(value, 1e-3)) + 1.0) / (math.log10(2.0) + 1.0), 0.0), 1.0)
    hue = 120 * (1 - x)
    return f"hsl({hue:.0f}, 70%, 80%)"


def render_report(table: list[dict], run_info: dict, n_rows: int, n_cells: int) -> str:
    env = Environment(loader=PackageLoader("paraisite_bench", "templates"), autoescape=select_autoescape())
    env.filters["heat"] = heat
    grids = []
    for backbone in sorted({r["backbone"] for r in table} | set(run_info.get("backbones", []))):
        for selection in sorted({r["selection"] for r in table if r["backbone"] == backbone}) or ["-"]:
            rows = [r for r in table if r["backbone"] == backbone and r["selection"] == selection]
            cells = {(r["strategy"], r["train"], r["test"]): r for r in rows}
            strategies = [s for s in run_info.get("strategies", []) if any(k[0] == s for k in cells)] or \
                sorted({k[0] for k in cells})
            trains = _order({k[1] for k in cells} | set(run_info.get("train", [])))
            tests = _order({k[2] for k in cells} | set(run_info.get("test", [])))
            blocks = []
            for s in strategies:
                block_rows = []
                for tr in trains:
                    line = []
                    for te in tests:
                        ours = cells.get((s, tr, te))
                        paper = PAPER_TABLE1.get((s, tr, te)) if backbone == "megnet" else None
                        line.append({"ours": ours, "paper": paper,
                                     "delta": (ours["mape_mean"] - paper[0]) if ours and paper else None,
                                     "outside": bool(ours and paper and abs(ours["mape_mean"] - paper[0]) > paper[1])})
                    if any(c["ours"] for c in line):
                        block_rows.append({"train": tr, "cells": line})
                blocks.append({"strategy": s, "step": STRATEGY_STEP.get(s, s), "rows": block_rows,
                               "description": run_info.get("strategy_descriptions", {}).get(s, ""),
                               "caveat": PAPER_CAVEATS.get(s, "")})
            grids.append({"backbone": backbone, "selection": selection,
                          "selection_text": SELECTION_MODES.get(selection, ""), "tests": tests, "blocks": blocks})
    template = env.get_template("report.html")
    return template.render(grids=grids, info=run_info, labels=run_info.get("labels", {}), caveats=PAPER_CAVEATS, n_rows=n_rows, n_cells=n_cells)
