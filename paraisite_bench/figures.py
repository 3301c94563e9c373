"""Figures of the report as inline SVG strings (matplotlib, Agg backend).

Text stays text (``svg.fonttype = 'none'``), so the SVG references no font file and the report makes no
request when it is opened; the hash salt and an empty date make the output reproducible.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import xml.etree.ElementTree as ET
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

STRATEGY_COLOURS = {"scratch": "#1f77b4", "pretrained": "#ff7f0e", "double": "#2ca02c"}
_FALLBACK = ["#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]

_RC = {
    "svg.fonttype": "none",  # keep text as <text>: no embedded or fetched fonts
    "svg.hashsalt": "paraisite-bench",
    "font.family": "sans-serif",
    # written into every <text>'s style: matplotlib's default list is 180 characters
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
}


def colour(name: str, order: list[str]) -> str:
    if name in STRATEGY_COLOURS:
        return STRATEGY_COLOURS[name]
    extra = [n for n in order if n not in STRATEGY_COLOURS]
    return _FALLBACK[extra.index(name) % len(_FALLBACK)] if name in extra else "#333333"


def to_svg(fig, salt: str = "") -> str:
    """The figure as a compact <svg> element (no XML prolog or DOCTYPE), ready to inline in HTML. ``salt``
    (e.g. the figure's title) keeps the element ids of several figures in one page apart, and reproducible."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": f"paraisite-bench:{salt or id(fig)}"}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    prefix = "f" + hashlib.sha256(f"{salt}:{svg}".encode()).hexdigest()[:8] + "-"
    return _compact(svg, prefix)


_SVG, _XLINK = "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"
_HREF = f"{{{_XLINK}}}href"
_REF = re.compile(r"url\(#([^)]+)\)")
_NUMBER = re.compile(r"-?\d+\.\d{3,}")
#: attributes holding coordinates, written by matplotlib with 6 decimals; 2 are far below a pixel
_COORDINATES = ("d", "x", "y", "width", "height", "transform", "points", "x1", "x2", "y1", "y2")


def _compact(svg: str, prefix: str) -> str:
    """matplotlib's SVG made small enough for a report holding dozens of figures (a 9-split Table I's
    per-split figures are several MB as written): no metadata, whitespace or unreferenced ids, plain groups
    unwrapped, a style shared by all of a group's children set once on the group, coordinates to 2 decimals.
    The ids that remain are short and prefixed with ``prefix``, so that several figures inlined in one page
    keep unique ids and their own references. The fixed size is dropped (the viewBox stays): the figure
    scales with the page."""
    ET.register_namespace("", _SVG)
    ET.register_namespace("xlink", _XLINK)
    root = ET.fromstring(svg)
    referenced = {v[1:] for el in root.iter() for v in [el.get(_HREF, "")] if v.startswith("#")}
    referenced |= {m for el in root.iter() for v in el.attrib.values() for m in _REF.findall(v)}
    short = {old: f"{prefix}{i:x}" for i, old in enumerate(sorted(referenced))}
    _strip(root, short)
    for key in ("width", "height"):
        root.attrib.pop(key, None)
    root.set("class", "fig")
    root.set("role", "img")
    return ET.tostring(root, encoding="unicode")


def _hoist_style(el) -> None:
    """A group whose children all carry the same style (a line's markers: hundreds of <use>) carries it once
    instead; SVG presentation properties are inherited, so nothing is drawn differently."""
    styles = {child.get("style") for child in el}
    if el.tag == f"{{{_SVG}}}g" and "style" not in el.attrib and len(el) > 1 and len(styles) == 1:
        style = styles.pop()
        if style:
            el.set("style", style)
            for child in el:
                del child.attrib["style"]


def _strip(el, short: dict[str, str]) -> None:
    children = []
    for child in el:
        if child.tag == f"{{{_SVG}}}metadata":
            continue
        _strip(child, short)
        if child.tag == f"{{{_SVG}}}g" and not child.attrib:
            children.extend(child)  # a plain group: its children take its place
        else:
            children.append(child)
    el[:] = children
    _hoist_style(el)
    if el.text is not None and not el.text.strip():
        el.text = None
    for child in children:
        if child.tail is not None and not child.tail.strip():
            child.tail = None
    if "id" in el.attrib:
        if el.get("id") in short:
            el.set("id", short[el.get("id")])
        else:
            del el.attrib["id"]
    for key, value in el.attrib.items():
        if key == _HREF and value.startswith("#"):
            el.set(key, "#" + short[value[1:]])
        elif "url(#" in value:
            el.set(key, _REF.sub(lambda m: f"url(#{short[m.group(1)]})", value))
        elif key in _COORDINATES:
            el.set(key, " ".join(_NUMBER.sub(lambda m: f"{float(m.group()):.2f}", value).split()))


def _log_axis(ax):
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.grid(True, which="major", axis="y", color="#dddddd", linewidth=0.5)


def learning_curves(curves: dict[tuple[str, str], list[dict[int, float]]], strategies: list[str],
                    trains: list[str], labels: dict[str, str], title: str) -> str | None:
    """Mean validation MAPE over epochs with a band from the lowest to the highest split: one panel per
    (train dataset, strategy), like the paper's Figs. 3–5. ``curves[(strategy, train)]`` holds one
    {epoch: val_mape} per split."""
    trains = [t for t in trains if any(curves.get((s, t)) for s in strategies)]
    if not trains:
        return None
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(len(trains), len(strategies), figsize=(2.6 * len(strategies) + 0.6,
                                 1.9 * len(trains) + 0.6), squeeze=False, sharey=True)
        for i, tr in enumerate(trains):
            for j, s in enumerate(strategies):
                ax = axes[i][j]
                _log_axis(ax)
                splits = curves.get((s, tr)) or []
                if i == 0:
                    ax.set_title(s)
                if j == 0:
                    ax.set_ylabel(f"train {labels.get(tr, tr)}\nvalidation MAPE")
                if not splits:
                    ax.text(0.5, 0.5, "not run", transform=ax.transAxes, ha="center", va="center",
                            color="#999")
                    ax.set_xticks([])
                    continue
                epochs = sorted({e for c in splits for e in c})
                vals = np.array([[c.get(e, np.nan) for e in epochs] for c in splits], dtype=float)
                mean = np.nanmean(vals, axis=0)
                col = colour(s, strategies)
                if len(splits) > 1:  # the band spans the splits (min to max): always positive on a log axis
                    ax.fill_between(epochs, np.nanmin(vals, axis=0), np.nanmax(vals, axis=0), color=col,
                                    alpha=0.2, linewidth=0)
                ax.plot(epochs, mean, color=col, linewidth=1.2, label=f"mean of {len(splits)} splits")
                best = int(np.nanargmin(mean))
                ax.plot([epochs[best]], [mean[best]], "v", color="black", markersize=4)
                ax.annotate(f"{mean[best]:.2f}", (epochs[best], mean[best]), textcoords="offset points",
                            xytext=(0, -9), ha="center", fontsize=6)
                if i == len(trains) - 1:
                    ax.set_xlabel("epoch")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return to_svg(fig, title)


def split_strips(values: dict[tuple[str, str, str], list[float]], paper: dict[tuple[str, str, str], tuple],
                 strategies: list[str], trains: list[str], tests: list[str], labels: dict[str, str],
                 title: str) -> str | None:
    """The per-split values behind each Table I cell: a box and jittered points per test dataset, one panel
    per (strategy, train dataset); the paper's mean ± std as a black bar where it has the cell."""
    rows = [(s, tr) for s in strategies for tr in trains if any(values.get((s, tr, te)) for te in tests)]
    if not rows:
        return None
    ncol = min(4, len(rows))
    nrow = math.ceil(len(rows) / ncol)
    rng = np.random.default_rng(0)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(nrow, ncol, figsize=(2.4 * ncol + 0.4, 1.9 * nrow + 0.6), squeeze=False,
                                 sharey=True)
        for ax in axes.flat[len(rows):]:
            ax.set_visible(False)
        for ax, (s, tr) in zip(axes.flat, rows):
            _log_axis(ax)
            col = colour(s, strategies)
            data = [values.get((s, tr, te)) or [] for te in tests]
            have = [k for k, d in enumerate(data) if d]
            ax.boxplot([data[k] for k in have], positions=have, widths=0.5, showfliers=False,
                       medianprops={"color": col}, boxprops={"color": "#888"}, whiskerprops={"color": "#888"},
                       capprops={"color": "#888"})
            for k in have:
                x = k + rng.uniform(-0.15, 0.15, len(data[k]))
                ax.plot(x, data[k], "o", color=col, markersize=3, alpha=0.8)
            for k, te in enumerate(tests):
                p = paper.get((s, tr, te))
                if p:
                    ax.errorbar([k + 0.32], [p[0]], yerr=[[min(p[1], p[0] * 0.95)], [p[1]]], fmt="s",
                                color="black", markersize=2.5, elinewidth=0.8, capsize=1.5)
            ax.set_xticks(range(len(tests)))
            ax.set_xticklabels([labels.get(te, te) for te in tests], rotation=30)
            ax.set_xlim(-0.6, len(tests) - 0.4)
            ax.set_title(f"{s} — train {labels.get(tr, tr)}")
        for r in range(nrow):
            axes[r][0].set_ylabel("MAPE (test on …)")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return to_svg(fig, title)


def group_curves(result_rows: list[dict], curve_rows: list[dict]) -> dict[tuple[str, str, str, str], list]:
    """(backbone, selection, strategy, train) -> one {epoch: val_mape} per split, from the final stage of
    each strategy's chain (the stage whose model the Table I cell evaluates)."""
    by_stage: dict[str, dict[int, float]] = defaultdict(dict)
    for c in curve_rows:
        v = c.get("val_mape")
        if v not in (None, ""):
            by_stage[c["stage_key"]][int(c["epoch"])] = float(v)
    seen = set()
    out: dict[tuple, list] = defaultdict(list)
    for r in result_rows:
        ident = (r["backbone"], r["selection"], r["strategy"], r["train"], r["stage_key"])
        if ident in seen or r["stage_key"] not in by_stage:
            continue
        seen.add(ident)
        out[ident[:4]].append(by_stage[r["stage_key"]])
    return out


def selected_epochs(epochs: dict[tuple[str, str], list[int]], max_epochs: dict[tuple[str, str], int],
                    strategies: list[str], trains: list[str], labels: dict[str, str],
                    title: str) -> str | None:
    """The epoch each split's model was selected at, per strategy (panel) and train dataset (x), with the
    stage's number of epochs as a dashed line: selections piling up at epoch 1 or at the last epoch show."""
    strategies = [s for s in strategies if any(epochs.get((s, t)) for t in trains)]
    if not strategies:
        return None
    rng = np.random.default_rng(1)
    with plt.rc_context(_RC):
        fig, axes = plt.subplots(1, len(strategies), figsize=(2.4 * len(strategies) + 0.4, 2.1),
                                 squeeze=False, sharey=True)
        for ax, s in zip(axes[0], strategies):
            col = colour(s, strategies)
            for k, tr in enumerate(trains):
                vals = epochs.get((s, tr)) or []
                if vals:
                    ax.plot(k + rng.uniform(-0.18, 0.18, len(vals)), vals, "o", color=col, markersize=3,
                            alpha=0.8)
                top = max_epochs.get((s, tr))
                if top:
                    ax.plot([k - 0.3, k + 0.3], [top, top], "--", color="#999", linewidth=0.8)
            ax.set_xticks(range(len(trains)))
            ax.set_xticklabels([labels.get(t, t) for t in trains], rotation=30)
            ax.set_xlim(-0.6, len(trains) - 0.4)
            ax.set_ylim(bottom=0)
            ax.set_title(s)
            ax.grid(True, axis="y", color="#dddddd", linewidth=0.5)
        axes[0][0].set_ylabel("selected epoch")
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
        return to_svg(fig, title)
