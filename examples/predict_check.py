"""The screening check of README "Screening": the AFLOW structures no stage of a run trained on, and how
well `paraisite-bench predict` ranks them against their AGL κ (a low-fidelity label).

    python examples/predict_check.py inputs RUN_DIR aflow-unseen.json   # the records to screen
    paraisite-bench predict RUN_DIR aflow-unseen.json --out screen/predictions.csv
    python examples/predict_check.py score screen/predictions.csv       # Spearman, top-100 hits
    python examples/predict_check.py shot screen/predictions.html shot.png  # headless Chromium
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from paraisite_bench.bundle import read_run
from paraisite_bench.context import Context
from paraisite_bench.data import resolve_data_dir
from paraisite_bench.orchestrate import load_plugins
from paraisite_bench.overlap import matching_ids
from paraisite_bench.protocol import Protocol
from paraisite_bench.store import Store
from paraisite_bench.train import StageSpec, stage_ids


def trained_ids(run_dir: Path, ctx: Context) -> set[str]:
    """Every id a stage of the run trained on (train.stage_ids of each stored stage)."""
    store = Store(run_dir / "store.sqlite", lock=False)
    try:
        keys = json.loads((run_dir / "run.json").read_text())["stages"]
        specs = [StageSpec.from_record(store.stage(key)["spec"]) for key in keys]
    finally:
        store.close()
    return {i for spec in specs for i in stage_ids(ctx, spec)[0]}


def inputs(run_dir: Path, out: Path) -> None:
    info, _ = read_run(run_dir)
    registry = load_plugins()
    data_dir = resolve_data_dir(None)
    seen = trained_ids(run_dir, Context(registry, data_dir, Protocol.from_dict(info["protocol"])))
    full = Context(registry, data_dir, Protocol())  # every AFLOW record, not the run's subsample
    twins = matching_ids(full, "aflow", info["train"], "structure")
    records = full.dataset("aflow").records
    keep = [r for i, r in sorted(records.items()) if i not in seen and i not in twins]
    out.write_text(json.dumps({"records": [{"id": r.id, "formula": r.formula, "kappa": r.value, "cif": r.cif}
                                           for r in keep]}))
    print(f"AFLOW: {len(records)} records; {len(seen & set(records))} trained on by a stage of {run_dir}; "
          f"{len(twins)} with the structure of a record of {', '.join(info['train'])}; "
          f"{len(keep)} left → {out}")


def score(predictions: Path) -> None:
    with open(predictions, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["kappa_true"]]
    pred = np.array([float(r["kappa_pred"]) for r in rows])
    true = np.array([float(r["kappa_true"]) for r in rows])
    rho = spearmanr(pred, true).statistic
    low_true = set(np.argsort(true)[: int(round(0.1 * len(true)))])
    top = np.argsort(pred)[:100]
    hits = len(low_true & set(top))
    low, high = (np.array([float(r[k]) for r in rows]) for k in ("kappa_low", "kappa_high"))
    inside = np.mean((low <= true) & (true <= high))
    outside = sum(r["outside_domain"] == "True" for r in rows)
    print(f"{len(rows)} screened: Spearman(pred, AGL κ) = {rho:.3f}; {hits} of the 100 lowest predicted are "
          f"among the {len(low_true)} (10 %) lowest AGL κ (random: {100 * 0.1:.0f}); calibrated interval "
          f"covers AGL κ for {inside:.2f}; {outside} flagged outside the training domain; MAPE vs AGL "
          f"{np.mean(np.abs(pred - true) / true):.2f}")
    out = np.array([r["outside_domain"] == "True" for r in rows])
    err = np.abs(np.log10(pred) - np.log10(true))
    for name, sel in (("inside", ~out), ("outside", out)):
        if sel.any():
            print(f"  {name} the domain ({sel.sum()}): median |log10 error| {np.median(err[sel]):.3f}, "
                  f"Spearman {spearmanr(pred[sel], true[sel]).statistic:.3f}")


def shot(html: Path, png: Path) -> None:
    """Open the page in headless Chromium (tests/report_browser.py), check that it makes no request and
    lists the CSV's rows, and screenshot its top."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from report_browser import browser_missing, chromium, open_report, outside_requests

    if browser_missing():
        sys.exit(f"error: {browser_missing()}")
    with chromium() as (ctx, requests):
        page = open_report(ctx, html)
        shown = page.evaluate("() => document.querySelectorAll('table.predictions tbody tr').length")
        page.screenshot(path=str(png), full_page=True, clip={"x": 0, "y": 0, "width": 1440, "height": 1500})
        leaks = outside_requests(requests, html)
    with open(html.with_suffix(".csv"), newline="") as fh:
        n_csv = sum(1 for _ in csv.DictReader(fh))
    print(f"{shown} rows on the page, {n_csv} in the CSV, {len(leaks)} outside requests; screenshot {png}")
    if leaks or shown != n_csv:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "inputs":
        inputs(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "score":
        score(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "shot":
        shot(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
