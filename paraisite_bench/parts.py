"""Runs in parts: ``run --only-splits`` trains a subset of a protocol's splits (the same stages, with the same
keys, as the whole run), and ``report PART... --out`` joins the parts into the one run they make.

Identity rule: run directories are parts of one run when their run.json agree on everything that decides
which results a run holds and what they mean (:data:`IDENTITY`): the protocol (splits, epochs, seeds,
selection, split grouping, …), the backbones, strategies, training and test datasets, the baselines and the
data checksums. Machines, package versions, workers, threads and devices may differ (each part's are kept).
Joined, the parts are one run: its cells, stages and results in the order a single run writes them, so its
table1.csv and results.csv are those of a single run with all the splits. A split held by two parts must
carry the same results in both (never one picked silently); a part whose run lacks splits while other
parts of a different run are given is reported with what differs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .errors import UserError
from .results import BASELINE, LoadedRun, ReportData, load_run, merge, metric_columns

#: the run.json fields that must agree for run directories to be parts of one run
IDENTITY = ("protocol", "backbones", "strategies", "train", "test", "baselines", "data")


def load_report_data(run_dirs) -> ReportData:
    """The report data of run directories (:func:`paraisite_bench.results.load_run` each), the parts of one
    run joined into it (:func:`join_parts`)."""
    return merge(join_parts([load_run(Path(d)) for d in run_dirs]))


# ---- --only-splits -----------------------------------------------------------------------------

def parse_splits(text: str, total: int) -> tuple[int, ...]:
    """``0-2`` or ``0,3,5-6``: the splits (0-based, sorted, each once) of a protocol of ``total`` splits."""
    out: set[int] = set()
    for item in (p.strip() for p in text.split(",")):
        lo, sep, hi = item.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise UserError(f"--only-splits {text!r}: expected split numbers and ranges, e.g. 0-2 or "
                            "0,3,5-6") from None
        if first > last or first < 0 or last >= total:
            raise UserError(f"--only-splits {text!r}: {item!r} is not a split or a range LOW-HIGH within the "
                            f"protocol's {total} split(s), numbered 0-{total - 1}")
        out.update(range(first, last + 1))
    return tuple(sorted(out))


def splits_text(splits) -> str:
    """Splits as ranges, e.g. ``0-2, 5``."""
    runs: list[list[int]] = []
    for r in sorted(set(splits)):
        if runs and r == runs[-1][1] + 1:
            runs[-1][1] = r
        else:
            runs.append([r, r])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


def held_splits(info: dict) -> tuple[int, ...]:
    """The splits a run directory holds: its ``only_splits``, else every split of its protocol."""
    if info.get("only_splits") is not None:
        return tuple(info["only_splits"])
    return tuple(range((info.get("protocol") or {}).get("splits", 0)))


# ---- which run directories are parts of one run ---------------------------------------------------

def identity(info: dict) -> str | None:
    """What a run directory must share with the other parts of its run (:data:`IDENTITY`), as a string;
    None for a directory that cannot be a part (no recorded plan: a CSV-only or `select` directory)."""
    if info.get("cells") is None or not info.get("protocol"):
        return None
    return json.dumps({k: info.get(k) for k in IDENTITY}, sort_keys=True)


def _differences(a: dict, b: dict) -> str:
    diff = []
    for k in IDENTITY:
        if a.get(k) == b.get(k):
            continue
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            inner = sorted(set(a[k]) | set(b[k]))
            diff += [f"{k}.{x} {a[k].get(x)!r} ≠ {b[k].get(x)!r}" for x in inner
                     if a[k].get(x) != b[k].get(x)]
        else:
            diff.append(f"{k} {a.get(k)!r} ≠ {b.get(k)!r}")
    return "; ".join(diff)


def join_parts(loaded: list[LoadedRun]) -> list[LoadedRun]:
    """The loaded run directories with the parts of each run joined into one (in the place of its first
    part); other directories are left as they are, side by side."""
    groups: dict[str, list[LoadedRun]] = {}
    out: list[LoadedRun | str] = []
    for run in loaded:
        ident = identity(run.info)
        if ident is None:
            out.append(run)
            continue
        if ident not in groups:
            groups[ident] = []
            out.append(ident)
        groups[ident].append(run)
    _check_complete(list(groups.values()))
    joined = {ident: group[0] if len(group) == 1 else join(group) for ident, group in groups.items()}
    return [joined[item] if isinstance(item, str) else item for item in out]


def _check_complete(groups: list[list[LoadedRun]]) -> None:
    """A part whose run lacks splits, while a part of another run is given, was most likely meant to join
    it: one line naming what differs between them."""
    parts = [g for g in groups if any(r.info.get("only_splits") is not None for r in g)]
    for group in parts:
        info = group[0].info
        held = {r for run in group for r in held_splits(run.info)}
        if len(held) == info["protocol"]["splits"]:
            continue
        other = next((g[0] for g in parts if g is not group), None)
        if other is not None:
            raise UserError(f"{info['dir']} and {other.info['dir']} are not parts of one run "
                            f"({_differences(info, other.info)}): parts must share "
                            f"{', '.join(IDENTITY)}; report them separately")


# ---- joining the parts of one run ---------------------------------------------------------------

def join(parts: list[LoadedRun]) -> LoadedRun:
    """One run from its parts: cells, stages and rows in the order of a single run with their splits."""
    _check_overlaps(parts)
    cells = _ordered_cells([c for p in parts for c in p.info["cells"]])
    stages = _ordered_stages(parts, cells)
    rows = _ordered_rows([r for p in parts for r in p.rows], cells)
    place = {k: i for i, k in enumerate(stages)}
    curves = _unique([c for p in parts for c in p.curves], lambda c: (c["stage_key"], str(c["epoch"])))
    curves.sort(key=lambda c: place.get(c["stage_key"], len(place)))  # stable: epochs stay in order
    rows_of_stages = _unique([s for p in parts for s in p.stages], lambda s: s["key"])
    rows_of_stages.sort(key=lambda s: place.get(s["key"], len(place)))
    skipped = _unique([s for p in parts for s in p.skipped], lambda s: (s.get("dataset"), s.get("id")))
    return LoadedRun(info=_joined_info(parts, cells, stages), rows=rows, curves=curves, stages=rows_of_stages,
                     skipped=skipped)


def _unique(items: list[dict], key) -> list[dict]:
    seen: dict = {}
    for item in items:
        seen.setdefault(key(item), item)
    return list(seen.values())


def _ordered_cells(cells: list[dict]) -> list[dict]:
    """The cells of the parts in a single run's order: backbone, strategy, train (each in the order the
    parts list them), split, seed, test."""
    first: dict[str, dict] = {k: {} for k in ("backbone", "strategy", "train", "test")}
    for c in cells:
        for k, seen in first.items():
            seen.setdefault(c[k], len(seen))
    unique = _unique(cells, _cell_id)
    return sorted(unique, key=lambda c: (first["backbone"][c["backbone"]], first["strategy"][c["strategy"]],
                                         first["train"][c["train"]], c["split"], c.get("seed", 0),
                                         first["test"][c["test"]]))


def _cell_id(c: dict) -> tuple:
    return c["backbone"], c["strategy"], c["train"], c["test"], int(c["split"]), str(c.get("seed", ""))


def _ordered_stages(parts: list[LoadedRun], cells: list[dict]) -> list[str]:
    """The parts' stage keys in a single run's order: each cell's chain, first stage first, as the plan
    adds them (a stage shared by several chains where it first appears)."""
    parents: dict[str, str | None] = {}
    for p in parts:
        parents.update({s["key"]: s.get("parent") for s in p.stages})
        parents.update(p.info.get("stage_parents") or {})
    out: dict[str, None] = {}
    for c in cells:
        chain, key = [], c["stage_key"]
        while key and key not in out and key not in chain:
            chain.append(key)
            key = parents.get(key)
        out.update(dict.fromkeys(reversed(chain)))
    for p in parts:  # stages no cell evaluates
        out.update(dict.fromkeys(p.info.get("stages", [])))
    return list(out)


def _ordered_rows(rows: list[dict], cells: list[dict]) -> list[dict]:
    """Result rows in a single run's order: the models' by cell (their readings in stored order), then the
    baselines' by baseline, train, test and split (as the store lists them)."""
    place = {_cell_id(c): i for i, c in enumerate(cells)}
    rows = _unique(rows, lambda r: (r["stage_key"], r["test"], r["strategy"], r["train"], r["selection"]))
    models = [r for r in rows if r["backbone"] != BASELINE]
    models.sort(key=lambda r: place.get(_cell_id(r), len(place)))
    baselines = [r for r in rows if r["backbone"] == BASELINE]
    baselines.sort(key=lambda r: (r["strategy"], r["train"], r["test"], int(r["split"])))
    return models + baselines


def _check_overlaps(parts: list[LoadedRun]) -> None:
    """A result held by two parts (a split both ran) must be the same in both."""
    seen: dict[tuple, tuple[dict, str]] = {}
    for p in parts:
        for r in p.rows:
            key = (r["backbone"], r["stage_key"], r["test"], r["strategy"], r["train"], r["selection"])
            if key not in seen:
                seen[key] = (r, p.info["dir"])
                continue
            other, where = seen[key]
            for m in sorted(set(metric_columns(r)) | set(metric_columns(other))):
                if not _same(r.get(m), other.get(m)):
                    raise UserError(
                        f"{where} and {p.info['dir']} both hold split {r['split']} of {r['backbone']} / "
                        f"{r['strategy']} {r['train']} → {r['test']} ({r['selection']}) with different "
                        f"results ({m} {other.get(m)} ≠ {r.get(m)}): leave one of them out of the report, "
                        "or run one part again with --only-splits without that split")


def _same(a, b) -> bool:
    if a in (None, "") or b in (None, ""):
        return a in (None, "") and b in (None, "")
    a, b = float(a), float(b)
    return a == b or (math.isnan(a) and math.isnan(b))


def _joined_info(parts: list[LoadedRun], cells: list[dict], stages: list[str]) -> dict:
    """run.json of the joined run: the first part's, with every part's cells, stages and baselines, the
    splits it holds, its time (started, finished, wall time summed over the parts) and each part's record."""
    infos = [p.info for p in parts]
    held = sorted({r for info in infos for r in held_splits(info)})
    complete = len(held) == infos[0]["protocol"]["splits"]
    finished = [i.get("finished") for i in infos]
    walls = [i.get("wall_s") for i in infos]
    record = [{k: i.get(k) for k in ("dir", "only_splits", "command", "started", "finished", "wall_s",
                                     "host", "workers", "threads", "device", "versions")} for i in infos]
    note = "joined from {} parts: {}".format(len(infos), "; ".join(
        f"{i['dir']} (splits {splits_text(held_splits(i))}, {i.get('wall_s') or '?'} s)" for i in infos))
    joined = dict(infos[0])
    joined.update(
        dir=" + ".join(i["dir"] for i in infos), out=" + ".join(str(i.get("out", i["dir"])) for i in infos),
        cells=cells, stages=stages, only_splits=None if complete else held, parts=record, note=note,
        command=" ; ".join(dict.fromkeys(str(i.get("command")) for i in infos)),
        started=min((i.get("started") or "" for i in infos), default="") or None,
        finished=None if None in finished else max(finished),
        wall_s=None if None in walls else round(sum(walls), 1),
        baseline_keys=list(dict.fromkeys(k for i in infos for k in i.get("baseline_keys", []))),
        stages_from_cache=_unique([s for i in infos for s in i.get("stages_from_cache") or []],
                                  lambda s: s["key"]),
        report_source="store" if all(i.get("report_source") == "store" for i in infos) else "csv")
    return joined

