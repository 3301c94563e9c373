"""Run-directory outputs: load a run's report data (:mod:`paraisite_bench.results`), then write its files —
results.csv, table1.csv, curves.csv, failures.csv, skipped.csv, report.html, table1.md, table1.tex, and the
report sections' own CSV tables (:attr:`paraisite_bench.report.ReportSection.tables`).
Regenerating them never retrains anything. Also the small helpers of a run directory itself (writable check,
log, machine info)."""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
from pathlib import Path

import torch

from .errors import UserError
from .parts import load_report_data
from .report import ReportSection, render, table1_latex, table1_markdown
from .results import (
    CURVE_FIELDS,
    FAILURE_FIELDS,
    SKIPPED_FIELDS,
    ReportData,
    load_run,
    merge,
    result_fields,
    table_fields,
)
from .store import Store


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


#: the files the core writes in a run directory, which no report section's table may take
CORE_FILES = ("results.csv", "table1.csv", "curves.csv", "failures.csv", "skipped.csv", "report.html",
              "table1.md", "table1.tex")


def write_report(data: ReportData, out: Path, sections: list[ReportSection],
                 left_out: list[str] = ()) -> dict[str, Path]:
    """Write report.html (at ``out``) with table1.md, table1.tex and the sections' CSV tables next to it;
    return the paths. ``left_out``: titles of sections left out, which the page names."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tables = section_tables(data, sections)
    paths = {"html": out, "md": out.parent / "table1.md", "tex": out.parent / "table1.tex"}
    for kind, text in (("html", render(data, sections, left_out)), ("md", table1_markdown(data)),
                       ("tex", table1_latex(data))):
        tmp = paths[kind].with_name(paths[kind].name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[kind])
    for name, rows in tables.items():
        paths[name] = out.parent / name
        write_csv(paths[name], list(rows[0]) if rows else [], rows)
    return paths


def section_tables(data: ReportData, sections: list[ReportSection]) -> dict[str, list[dict]]:
    """The CSV tables of ``sections``, ``{file name: rows}``. A name the core writes, or that two sections
    give, is refused (one line naming both), never one file silently replacing the other."""
    out: dict[str, list[dict]] = {}
    owner: dict[str, str] = {}
    for sec in sections:
        for name, rows in (sec.tables(data) if sec.tables else {}).items():
            clash = ("the core" if name in CORE_FILES else f"section {owner[name]!r}" if name in owner
                     else None)
            if clash or "/" in name or not name.endswith(".csv"):
                why = f"which {clash} writes too" if clash else "not a plain NAME.csv"
                raise UserError(f"report section {sec.name!r} (plugin {sec.plugin or '?'}) writes the table "
                                f"{name!r}, {why}: rename the table")
            owner[name] = sec.name
            out[name] = rows
    return out


def write_failures(folder: Path, stages: list[dict]) -> None:
    """failures.csv: the failed jobs among ``stages`` (:func:`paraisite_bench.results.stage_rows`)."""
    failed = [s for s in stages if s.get("status") == "failed" or s.get("error")]
    write_csv(Path(folder) / "failures.csv", FAILURE_FIELDS, failed)


def _write_tables(folder: Path, data: ReportData, with_skipped: bool) -> None:
    """results.csv, table1.csv, curves.csv (and skipped.csv) of ``data``; metric columns named by metric."""
    write_csv(folder / "results.csv", result_fields(data.rows), data.rows)
    write_csv(folder / "table1.csv", table_fields(data.table), data.table)
    write_csv(folder / "curves.csv", CURVE_FIELDS, data.curves)
    write_failures(folder, data.stages)
    if with_skipped:
        write_csv(folder / "skipped.csv", SKIPPED_FIELDS, data.skipped)


def write_run_outputs(run_dir: Path, store: Store, run_info: dict, sections: list[ReportSection],
                      skipped: list[dict] | None = None) -> ReportData:
    """(Re)write every output file of a run directory from its open store, at the end of ``run`` (or by
    ``report``); ``skipped`` replaces skipped.csv when given. Returns the report data (``.table``:
    Table I)."""
    run_dir = Path(run_dir)
    data = merge([load_run(run_dir, store=store, info=run_info, skipped=skipped)])
    _write_tables(run_dir, data, with_skipped=skipped is not None)
    write_report(data, run_dir / "report.html", sections)
    return data


def rewrite_outputs(run_dirs: list[Path], sections: list[ReportSection], out: Path | None = None,
                    left_out: list[str] = ()) -> tuple[ReportData, dict[str, Path]]:
    """The ``report`` command: one run directory's outputs rewritten in place from its store (from its CSVs
    when the store is gone, or its study for a `select` directory: then only the report files), or the
    merged report of several at ``out`` with merged CSVs next to it (never over a run's own CSVs). Run
    directories that are parts of one run (``run --only-splits``, :mod:`paraisite_bench.parts`) are joined
    into that run; other runs stand side by side. ``left_out``: titles of sections the caller left out, which
    the page names."""
    run_dirs = [Path(d) for d in run_dirs]
    for d in run_dirs:
        if not d.is_dir():
            raise UserError(f"run directory {d} does not exist: give the --out folder of a run")
    if out is None:
        if len(run_dirs) > 1:
            raise UserError("several run directories need --out FILE.html for the merged report")
        out = run_dirs[0] / "report.html"
    data = load_report_data(run_dirs)
    out = Path(out)
    if len(run_dirs) == 1 and out.resolve() == (run_dirs[0] / "report.html").resolve():
        if data.runs[0].get("report_source") == "store":
            _write_tables(run_dirs[0], data, with_skipped=False)
    elif out.resolve().parent not in {d.resolve() for d in run_dirs}:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_tables(out.parent, data, with_skipped=True)
    return data, write_report(data, out, sections, left_out)


def writable_run_dir(out: str | Path) -> Path:
    """Create the run directory of ``run``/``select`` and check that it can be written, before any work."""
    out_dir = Path(out)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"cannot write to run directory {out_dir} ({exc.strerror}): "
                        "choose another --out") from None
    return out_dir


def file_log(path: Path):
    """A ``log(msg)`` that appends a time-stamped line to ``path`` (the run's log file)."""
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
    if torch.cuda.is_available():
        info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    else:
        info["gpu"] = "none (CPU only)"
    return info
