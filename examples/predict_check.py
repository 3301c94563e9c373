"""The screening check of README "Screening": the AFLOW structures no stage of a run trained on, and how
well `paraisite-bench predict` ranks them against their AGL κ (a low-fidelity label).

    python examples/predict_check.py inputs RUN_DIR aflow-unseen.json   # the records to screen
    paraisite-bench predict RUN_DIR aflow-unseen.json --out screen/predictions.csv
    python examples/predict_check.py score screen/predictions.csv       # Spearman, top-100 hits
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from paraisite_bench.bundle import protocol_from, read_run, stage_spec
from paraisite_bench.context import Context
from paraisite_bench.data import resolve_data_dir
from paraisite_bench.orchestrate import load_plugins
from paraisite_bench.overlap import matching_ids
from paraisite_bench.protocol import Protocol
from paraisite_bench.store import Store
from paraisite_bench.train import stage_ids


def trained_ids(run_dir: Path, ctx: Context) -> set[str]:
    """Every id a stage of the run trained on (train.stage_ids of each stored stage)."""
    store = Store(run_dir / "store.sqlite", lock=False)
    try:
        specs = [stage_spec(store.stage(key)["spec"]) for key in json.loads((run_dir / "run.json").read_text())
                 ["stages"]]
    finally:
        store.close()
    return {i for spec in specs for i in stage_ids(ctx, spec)[0]}


def inputs(run_dir: Path, out: Path) -> None:
    info, _ = read_run(run_dir)
    registry = load_plugins()
    data_dir = resolve_data_dir(None)
    seen = trained_ids(run_dir, Context(registry, data_dir, protocol_from(info["protocol"])))
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
    inside = np.mean([float(r["kappa_low"]) <= float(r["kappa_true"]) <= float(r["kappa_high"]) for r in rows])
    outside = sum(r["outside_domain"] == "True" for r in rows)
    print(f"{len(rows)} screened: Spearman(pred, AGL κ) = {rho:.3f}; {hits} of the 100 lowest predicted are "
          f"among the {len(low_true)} (10 %) lowest AGL κ (random: {100 * 0.1:.0f}); calibrated interval "
          f"covers AGL κ for {inside:.2f}; {outside} flagged outside the training domain; MAPE vs AGL "
          f"{np.mean(np.abs(pred - true) / true):.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "inputs":
        inputs(Path(sys.argv[2]), Path(sys.argv[3]))
    elif len(sys.argv) == 3 and sys.argv[1] == "score":
        score(Path(sys.argv[2]))
    else:
        sys.exit(__doc__)
