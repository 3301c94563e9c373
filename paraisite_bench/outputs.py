"""Run-directory outputs, all derived from the store (regenerating them never retrains anything):
results.csv, table1.csv, curves.csv, skipped.csv, report.html, table1.md, table1.tex."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
from collections import defaultdict
from pathlib import Path

from .reference import PAPER_BACKBONE, PAPER_TABLE1
from .store import Store

RESULT_FIELDS = ["backbone", "strategy", "train", "test", "split", "mape", "n_test", "best_epoch", "selection",
                 "chain", "weights_loaded", "stage_key"]
CURVE_FIELDS = ["stage_key", "stage", "backbone", "init", "dataset", "split", "epoch", "train_mape", "val_mape", "lr"]
SKIPPED_FIELDS = ["dataset", "id", "problem", "hint"]
TABLE_FIELDS = ["backbone", "strategy", "train", "test", "selection", "mape_mean", "mape_std", "n_splits",
                "paper_mean", "paper_std", "paper_source"]


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def result_rows(cells: list[dict], store: Store) -> list[dict]:
    rows = []
    stages: dict[str, tuple] = {}  # key -> (stage row, its evaluations, published tensors loaded)
    for c in cells:
        key = c["stage_key"]
        if key not in stages:
            st = store.stage(key)
            done = bool(st and st["status"] == "done")
            stages[key] = (st, store.evals(key) if done else {}, _weights_loaded(store, key) if done else "")
        st, evals, loaded = stages[key]
        ev = evals.get(c["test"])
        if ev is None:
            continue
        rows.append({
            "backbone": c["backbone"], "strategy": c["strategy"], "train": c["train"], "test": c["test"],
            "split": c["split"], "mape": ev["value"], "n_test": ev["n_test"], "best_epoch": st["best_epoch"],
            "selection": st["spec"]["options"]["selection"], "chain": c["chain"],
            "weights_loaded": loaded, "stage_key": key,
        })
    return rows


def _weights_loaded(store: Store, key: str) -> str:
    """How many published tensors the chain's first stage loaded (e.g. '106/108'), or ''."""
    while key:
        st = store.stage(key)
        if st is None:
            return ""
        info = st["weights_info"] or {}
        if str(info.get("init", "")).startswith("weights:"):
            return f"{info.get('tensors_loaded')}/{info.get('tensors_total')}"
        key = st["spec"].get("parent")
    return ""


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and sample std (ddof=1) over splits per backbone × strategy × train × test × selection."""
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[(r["backbone"], r["strategy"], r["train"], r["test"], r["selection"])].append(float(r["mape"]))
    out = []
    for (b, s, tr, te, sel), vals in groups.items():
        n = len(vals)
        mean = sum(vals) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else 0.0
        paper = PAPER_TABLE1.get((s, tr, te)) if b == PAPER_BACKBONE else None  # the paper's numbers are MEGNet's
        out.append({"backbone": b, "strategy": s, "train": tr, "test": te, "selection": sel,
                    "mape_mean": round(mean, 6), "mape_std": round(std, 6), "n_splits": n,
                    "paper_mean": paper[0] if paper else "", "paper_std": paper[1] if paper else "",
                    "paper_source": paper[2] if paper else ""})
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
                    "finished": st["finished"], "error": st["error"],
                    "accelerated": (st["weights_info"] or {}).get("accelerated")})
    return out


def writable_run_dir(out: str | Path) -> Path:
    """Create the run directory of ``run``/``select`` and check that it can be written, before any work."""
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        from .errors import UserError

        raise UserError(f"cannot write to run directory {out_dir} ({exc.strerror}): choose another --out") from None
    return out_dir


def file_log(path: Path):
    """A ``log(msg)`` that appends a time-stamped line to ``path`` (the run's log file)."""
    import datetime as dt

    def log(msg: str) -> None:
        with open(path, "a") as fh:
            fh.write(f"[{dt.datetime.now().isoformat(timespec='seconds')}] {msg}\n")

    return log


def machine_info() -> dict:
    """The machine a run ran on: CPU model and count, memory, accelerator (if torch sees one), OS."""
    info = {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        info["cpu"] = platform.processor() or platform.machine()
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(line for line in fh if line.startswith("MemTotal")).split()[1])
            info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        else:
            info["gpu"] = "none (CPU only)"
    except Exception:  # pragma: no cover - torch is a dependency; this is belt and braces
        info["gpu"] = "unknown"
    return info


def write_outputs(run_dir: Path, store: Store, run_info: dict, skipped: list[dict] | None = None) -> dict:
    """(Re)write every output file of a run directory from the store; return the table rows."""
    from .report import ReportData, write_report

    run_dir = Path(run_dir)
    cells = run_info["cells"]
    rows = result_rows(cells, store)
    table = aggregate(rows)
    _write_csv(run_dir / "results.csv", RESULT_FIELDS, rows)
    _write_csv(run_dir / "table1.csv", TABLE_FIELDS, table)
    stage_keys = run_info.get("stages", sorted({c["stage_key"] for c in cells}))
    curves = curve_rows(stage_keys, store)
    _write_csv(run_dir / "curves.csv", CURVE_FIELDS, curves)
    if skipped is not None:
        _write_csv(run_dir / "skipped.csv", SKIPPED_FIELDS, skipped)
    elif (run_dir / "skipped.csv").exists():
        with open(run_dir / "skipped.csv", newline="") as fh:
            skipped = list(csv.DictReader(fh))
    stages = stage_rows(stage_keys, store)
    for s in stages:
        s["run"] = str(run_dir)
    info = dict(run_info, dir=str(run_dir), report_source="store")
    have = {(r["backbone"], r["strategy"], r["train"], r["test"], r["split"]) for r in rows}
    missing = [c for c in cells if (c["backbone"], c["strategy"], c["train"], c["test"], c["split"]) not in have]
    data = ReportData(runs=[info], rows=rows, table=table, curves=curves, stages=stages, skipped=skipped or [],
                      missing=missing)
    write_report(data, run_dir / "report.html")
    return {"rows": rows, "table": table}


def write_merged_outputs(data, out: Path) -> dict:
    """A report of several run directories (``paraisite-bench report A B --out X/report.html``): report.html,
    table1.md, table1.tex and the merged results.csv, table1.csv, curves.csv, skipped.csv next to it."""
    from .report import write_report

    out = Path(out)
    paths = write_report(data, out)
    folder = out.parent
    _write_csv(folder / "results.csv", RESULT_FIELDS, data.rows)
    _write_csv(folder / "table1.csv", TABLE_FIELDS, data.table)
    _write_csv(folder / "curves.csv", CURVE_FIELDS, data.curves)
    _write_csv(folder / "skipped.csv", SKIPPED_FIELDS, data.skipped)
    return paths


def load_run_info(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    if not path.exists():
        from .errors import UserError

        raise UserError(f"{run_dir} is not a run directory (no run.json): give the --out folder of a run")
    return json.loads(path.read_text())

