"""The data of a report, built in one place: store (or, when the store is gone, the CSV outputs) → result
rows → Table I aggregates → :class:`ReportData`, for one run directory or several merged.

Both the end of a run (:func:`paraisite_bench.outputs.write_run_outputs`) and ``paraisite-bench report``
load through :func:`load_run` and :func:`merge`, so missing cells, default stage keys, run tagging and the
protocol check exist once. Nothing here renders or writes files.

A result row names the metric it holds: its value sits in a column called by the metric (``mape`` for κ,
``mae`` for other regression targets, see :class:`paraisite_bench.data.Target`) and its ``metric`` key says
which; a Table I row likewise has ``<metric>_mean`` and ``<metric>_std``.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .reference import PAPER_BACKBONE, PAPER_TABLE1
from .stats import BASELINE, mean_interval, split_means
from .store import Store

#: results.csv columns around the metric columns (``mape`` for κ; one column per metric of the run)
RESULT_KEYS = ["backbone", "strategy", "train", "test", "split", "seed"]
#: ``epoch``: the epoch whose weights were scored (the selected one, or the last for ``last``)
RESULT_DETAILS = ["n_test", "epoch", "selection", "chain", "weights_loaded", "stage_key"]
TABLE_KEYS = ["backbone", "strategy", "train", "test", "selection"]
TABLE_DETAILS = ["n_splits", "n_seeds", "paper_mean", "paper_std", "paper_source"]
CURVE_FIELDS = ["stage_key", "stage", "backbone", "init", "dataset", "split", "epoch", "train_mape",
                "val_mape", "lr"]
SKIPPED_FIELDS = ["dataset", "id", "problem", "hint"]
#: failures.csv: every job that failed (its stage; ``init``: how the stage starts)
FAILURE_FIELDS = ["label", "backbone", "init", "dataset", "split", "error"]
#: The metric of the paper's Table I, first among the metric columns.
PAPER_METRIC = "mape"
#: The order of metric columns: the headlines (MAPE for κ, MAE for other targets) first, then the others.
METRIC_ORDER = ["mape", "mae", "mae_log", "spearman", "r2_log", "r2"]

DATASET_ORDER = ["dataset1", "dataset2", "mix", "aflow"]
STRATEGY_ORDER = ["scratch", "pretrained", "double"]


# ---- metrics of rows --------------------------------------------------------------------------

def _is_metric_column(name: str, fixed: set) -> bool:
    return name not in fixed and name != "metric" and not name.startswith("leak_")


def metric_columns(row: dict) -> list[str]:
    """The metric columns of a result row (those that hold a value), in :data:`METRIC_ORDER`."""
    fixed = set(RESULT_KEYS) | set(RESULT_DETAILS)
    found = [k for k, v in row.items() if _is_metric_column(k, fixed) and v not in (None, "")]
    return sorted(found, key=_metric_rank)


def _metric_rank(name: str) -> tuple:
    return (METRIC_ORDER.index(name) if name in METRIC_ORDER else len(METRIC_ORDER), name)


def metric_of(row: dict) -> str:
    """The headline metric of a result row: its ``metric`` key or, for a row read from a CSV, its first
    metric column."""
    if row.get("metric"):
        return row["metric"]
    return next(iter(metric_columns(row)), PAPER_METRIC)


def metric_value(row: dict) -> float:
    """The value of a result row's headline metric."""
    return float(row[metric_of(row)])


def table_mean(row: dict) -> float:
    """Mean over splits of a Table I row's headline metric."""
    return float(row[f"{row.get('metric', PAPER_METRIC)}_mean"])


def table_std(row: dict) -> float:
    return float(row[f"{row.get('metric', PAPER_METRIC)}_std"])


def metrics_in(rows: list[dict]) -> list[str]:
    """Every metric of ``rows`` in :data:`METRIC_ORDER`; the paper's alone when there is no row."""
    found = {m for row in rows for m in metric_columns(row)} or {PAPER_METRIC}
    return sorted(found, key=_metric_rank)


def headline_metrics(rows: list[dict]) -> list[str]:
    """The headline metrics of ``rows`` (``mape`` for κ, ``mae`` for other targets), the paper's first."""
    found = {metric_of(row) for row in rows} or {PAPER_METRIC}
    return sorted(found, key=_metric_rank)


def result_fields(rows: list[dict]) -> list[str]:
    leak = sorted({k for row in rows for k in row if k.startswith("leak_")})
    return RESULT_KEYS + metrics_in(rows) + RESULT_DETAILS + leak


def table_fields(table: list[dict]) -> list[str]:
    metrics = metrics_in([{k[:-5]: 1 for k in row if k.endswith("_mean") and k != "paper_mean"}
                          for row in table])
    stats = [f"{m}_{stat}" for m in metrics for stat in ("mean", "std", "ci_low", "ci_high")]
    leak = sorted({k for row in table for k in row if k.startswith("leak_")})
    return TABLE_KEYS + stats + TABLE_DETAILS + leak


# ---- rows from a store ------------------------------------------------------------------------

def result_rows(cells: list[dict], store: Store) -> list[dict]:
    """One row per planned cell and selection mode whose stage is done and evaluated on the cell's test
    dataset, with every metric of that evaluation."""
    rows = []
    stages: dict[str, tuple] = {}  # key -> (stage row, its evaluations, published tensors loaded)
    for c in cells:
        key = c["stage_key"]
        if key not in stages:
            st = store.stage(key)
            done = bool(st and st["status"] == "done")
            stages[key] = (st, store.evals(key) if done else {}, _weights_loaded(store, key) if done else "")
        st, evals, loaded = stages[key]
        for selection, ev in evals.get(c["test"], {}).items():
            metrics = {m: (math.nan if v is None else v) for m, v in ev["metrics"].items()}
            rows.append({
                "backbone": c["backbone"], "strategy": c["strategy"], "train": c["train"], "test": c["test"],
                "split": c["split"], "seed": c.get("seed", st["spec"]["options"]["seed"]), **metrics,
                "metric": next(iter(metrics)), "n_test": ev["n_test"], "epoch": ev["epoch"],
                "selection": selection, "chain": c["chain"], "weights_loaded": loaded, "stage_key": key,
                **{k: v for k, v in c.items() if k.startswith("leak_")},
            })
    return rows
def _weights_loaded(store: Store, key: str) -> str:
    """How many published tensors the chain's first stage loaded (e.g. '106/108'), or ''."""
    while key:
        st = store.stage(key)
        if st is None:
            return ""
        info = st["weights_info"] or {}
        if "tensors_total" in info:  # only a stage that loaded published weights counts their tensors
            return f"{info.get('tensors_loaded')}/{info.get('tensors_total')}"
        key = st["spec"].get("parent")
    return ""


def _metric_stats(rows: list[dict], metric: str) -> dict:
    """Mean, sample std (ddof=1) and the 95 % t interval of the mean over splits of one metric."""
    # seeds averaged within a split first, NaN (an undefined correlation) left out: stats.split_means
    per_split = next(iter(split_means(rows, metric).values()), {})
    vals = [v for _, v in sorted(per_split.items())]
    if not vals:
        return {}
    n = len(vals)
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
    ci = mean_interval(vals)
    return {f"{metric}_mean": round(mean, 6), f"{metric}_std": round(std, 6),
            f"{metric}_ci_low": _round(ci.low), f"{metric}_ci_high": _round(ci.high)}


def _round(v: float):
    return "" if math.isnan(v) else round(v, 6)


def aggregate(rows: list[dict]) -> list[dict]:
    """Per backbone × strategy × train × test × selection: every metric's mean, sample std (ddof=1) and 95 %
    interval over splits (seeds averaged within a split first), and the leakage counts' mean over splits."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["backbone"], r["strategy"], r["train"], r["test"], r["selection"])].append(r)
    out = []
    for (b, s, tr, te, sel), members in groups.items():
        m = metric_of(members[0])  # one test dataset, one headline metric
        paper = PAPER_TABLE1.get((s, tr, te)) if b == PAPER_BACKBONE and m == PAPER_METRIC else None
        row = {"backbone": b, "strategy": s, "train": tr, "test": te, "selection": sel, "metric": m}
        for metric in metrics_in(members):
            row.update(_metric_stats(members, metric))
        row.update(n_splits=len({int(r["split"]) for r in members}),
                   n_seeds=len({str(r.get("seed", "")) for r in members}),
                   paper_mean=paper[0] if paper else "", paper_std=paper[1] if paper else "",
                   paper_source=paper[2] if paper else "", **_leak_means(members))
        out.append(row)
    return out


def _leak_means(rows: list[dict]) -> dict:
    """Mean over a cell's rows of each leakage count (``leak_formula``, ``leak_structure``)."""
    out = {}
    for k in sorted({k for r in rows for k in r if k.startswith("leak_")}):
        values = [float(r[k]) for r in rows if r[k] not in (None, "")]
        out[k] = round(sum(values) / len(values), 6) if values else ""
    return out


def curve_rows(stage_keys, store: Store) -> list[dict]:
    rows = []
    for key in stage_keys:
        st = store.stage(key)
        if not st or st["status"] != "done":
            continue
        spec = st["spec"]
        for c in st["curves"] or []:
            rows.append({"stage_key": key, "stage": spec["label"], "backbone": spec["backbone"],
                         "init": spec["init"], "dataset": spec["dataset"], "split": spec["split"], **c})
    return rows


def stage_rows(stage_keys, store: Store) -> list[dict]:
    """Provenance of each training stage: label, status, wall time, when it finished, selected epoch."""
    out = []
    for key in stage_keys:
        st = store.stage(key)
        if st is None:
            continue
        spec = st["spec"] or {}
        out.append({"key": key, "label": spec.get("label", key), "status": st["status"],
                    "epochs": (spec.get("options") or {}).get("epochs"), "best_epoch": st["best_epoch"],
                    "n_train": st["n_train"], "n_val": st["n_val"], "wall_s": st["wall_s"],
                    "finished": st["finished"], "error": st["error"], "backbone": spec.get("backbone"),
                    "init": spec.get("init"), "dataset": spec.get("dataset"), "split": spec.get("split"),
                    "parent": spec.get("parent"),
                    "accelerated": (st["weights_info"] or {}).get("accelerated")})
    return out


# ---- the data every report section reads ------------------------------------------------------

def rank(name: str, order=DATASET_ORDER) -> int:
    """Where ``name`` stands in the paper's order (datasets by default); unknown names after the known."""
    return order.index(name) if name in order else len(order)


def ordered(names, order=DATASET_ORDER) -> list[str]:
    """``names`` in the paper's order (known names first), then alphabetically."""
    return sorted(names, key=lambda n: (rank(n, order), n))


@dataclass
class ReportData:
    """Everything a report shows, merged over run directories."""

    #: run.json of each run (plus "dir" and "report_source": "store" or "csv"); provenance comes from here
    runs: list[dict] = field(default_factory=list)
    #: results.csv rows: backbone, strategy, train, test, split, <metric>, metric, n_test, best_epoch, ...
    rows: list[dict] = field(default_factory=list)
    #: table1.csv rows (:func:`aggregate`)
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
        """The trained models' backbones (not the baselines')."""
        names = {r["backbone"] for r in self.table} - {BASELINE}
        for run in self.runs:
            names |= set(run.get("backbones", []))
        return sorted(names)

    @property
    def strategies(self) -> list[str]:
        """The trained models' strategies (a baseline's name is its rows' ``strategy``: not one of them)."""
        names = list(dict.fromkeys(s for run in self.runs for s in run.get("strategies", [])))
        found = {r["strategy"] for r in self.table if r["backbone"] != BASELINE}
        extra = ordered(found - set(names), STRATEGY_ORDER)
        return names + extra if names else ordered(found, STRATEGY_ORDER)

    @property
    def trains(self) -> list[str]:
        return ordered({r["train"] for r in self.table}
                       | {t for run in self.runs for t in run.get("train", [])})

    @property
    def tests(self) -> list[str]:
        return ordered({r["test"] for r in self.table}
                       | {t for run in self.runs for t in run.get("test", [])})

    @property
    def selections(self) -> list[str]:
        return sorted({r["selection"] for r in self.table}) or ["paper"]

    @property
    def metrics(self) -> list[str]:
        return metrics_in(self.rows)

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


# ---- loading run directories ------------------------------------------------------------------

@dataclass
class LoadedRun:
    """One run directory as read, before merging: its run.json (tagged with "dir" and "report_source")
    and its rows."""

    info: dict
    rows: list[dict] = field(default_factory=list)
    curves: list[dict] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    study: dict | None = None


def read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _typed_result(row: dict) -> dict:
    """A results.csv row with its numbers as numbers and its headline ``metric`` named."""
    row = dict(row)
    row["metric"] = metric_of(row)
    for m in metric_columns(row):
        row[m] = float(row[m])
    for k in ("split", "seed", "n_test", "epoch"):
        if row.get(k) not in (None, ""):
            row[k] = int(row[k])
    return row


def _stage_keys(info: dict) -> list[str]:
    """The run's stages; a run.json written before it listed them: the stages its cells evaluate."""
    return info.get("stages", sorted({c["stage_key"] for c in info["cells"]}))


def baseline_rows(info: dict, store: Store, selections) -> list[dict]:
    """The run's baseline results (``info["baseline_keys"]``) as result rows, one per selection mode of the
    run's models: a baseline selects no epoch, so it stands next to the models under every mode."""
    keys = set(info.get("baseline_keys", []))
    rows = []
    for b in store.baselines():
        if b["key"] not in keys:
            continue
        metrics = {m: (math.nan if v is None else v) for m, v in b["metrics"].items()}
        for selection in selections:
            rows.append({"backbone": BASELINE, "strategy": b["baseline"], "train": b["train"],
                         "test": b["test"], "split": b["split"], "seed": "", **metrics,
                         "metric": next(iter(metrics)), "n_test": b["n_test"], "epoch": "",
                         "selection": selection,
                         "chain": f"baseline:{b['baseline']}", "weights_loaded": "", "stage_key": b["key"]})
    return rows


def _from_store(run: LoadedRun, store: Store) -> None:
    run.rows = result_rows(run.info["cells"], store)
    protocol = run.info.get("protocol") or {}
    selections = sorted({r["selection"] for r in run.rows}) or [protocol.get("selection", "paper")]
    run.rows += baseline_rows(run.info, store, selections)
    keys = _stage_keys(run.info)
    run.curves = curve_rows(keys, store)
    run.stages = stage_rows(keys, store)
    run.info["report_source"] = "store"


def load_run(run_dir: Path, store: Store | None = None, info: dict | None = None,
             skipped: list[dict] | None = None) -> LoadedRun:
    """One run directory's rows, curves, stages and skipped records. A run in progress passes its open
    ``store``, its ``info`` (run.json) and its ``skipped`` records; otherwise they are read from the
    directory: its store when run.json and store.sqlite are there, else its CSV outputs (the store is
    gone), else a `select` directory's study alone. Never trains anything."""
    run_dir = Path(run_dir)
    info_path = run_dir / "run.json"
    if info is None:
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
    run = LoadedRun(info=dict(info, dir=str(run_dir)))
    run.skipped = list(skipped) if skipped is not None else read_csv(run_dir / "skipped.csv")
    study_path = run_dir / "study.json"
    if study_path.exists():
        run.study = dict(json.loads(study_path.read_text()), dir=str(run_dir))
    if store is not None:
        _from_store(run, store)
    elif run.study is not None and not info_path.exists():
        _study_only(run)
    elif info.get("cells") is not None and (run_dir / "store.sqlite").exists():
        with_store = Store(run_dir / "store.sqlite")
        try:
            _from_store(run, with_store)
        finally:
            with_store.close()
    elif (run_dir / "results.csv").exists():
        run.rows = [_typed_result(r) for r in read_csv(run_dir / "results.csv")]
        run.curves = read_csv(run_dir / "curves.csv")
        run.info["report_source"] = "csv"
    else:
        lacks = "no run.json" if not info_path.exists() else "no store.sqlite, no results.csv"
        raise UserError(f"{run_dir} is not a run directory ({lacks}): give the --out folder of a run")
    for s in run.stages:
        s["run"] = str(run_dir)
    return run


def _study_only(run: LoadedRun) -> None:
    """A `select` run directory: its study is the report; provenance comes from study.json."""
    study = run.study
    run.info.update(kind="select", protocol=None, notes=study.get("notes", []), command=study.get("command"),
                    started=study.get("started"), finished=study.get("finished"), wall_s=study.get("wall_s"),
                    report_source="study")


def merge(loaded: list[LoadedRun]) -> ReportData:
    """Merge run directories; a result present in several (same stage and test) counts once."""
    check_protocols([run.info for run in loaded])
    data = ReportData()
    seen: dict[str, set] = defaultdict(set)

    def first(kind: str, key, item: dict, into: list[dict]) -> None:
        if key not in seen[kind]:
            seen[kind].add(key)
            into.append(item)

    for run in loaded:
        data.runs.append(run.info)
        for r in run.rows:
            first("row", (r["stage_key"], r["test"], r["strategy"], r["train"], r["selection"]), r, data.rows)
        for c in run.curves:
            first("curve", (c["stage_key"], str(c["epoch"])), c, data.curves)
        for s in run.stages:
            first("stage", s["key"], s, data.stages)
        for s in run.skipped:
            first("skipped", (s.get("dataset"), s.get("id")), s, data.skipped)
        if run.study:
            data.studies.append(run.study)
    data.table = aggregate(data.rows)
    data.missing = missing_cells(data)
    return data


def missing_cells(data: ReportData) -> list[dict]:
    """The planned cells (backbone, strategy, train, test, split) that have no result."""
    have = {(r["backbone"], r["strategy"], r["train"], r["test"], int(r["split"])) for r in data.rows}
    return [c for run in data.runs for c in run.get("cells", [])
            if (c["backbone"], c["strategy"], c["train"], c["test"], c["split"]) not in have]


def check_protocols(infos: list[dict]) -> None:
    """Runs merged into one Table I must share their protocol within a selection mode (each selection mode
    has its own grid); otherwise a cell would pool, say, 15-epoch and 300-epoch results."""
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
                            "cannot share a Table I; merge runs of one protocol "
                            "(one run directory per backbone)")


def load_runs(run_dirs) -> ReportData:
    """The merged report data of run directories, each read by :func:`load_run`."""
    return merge([load_run(Path(d)) for d in run_dirs])

