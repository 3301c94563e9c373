"""What a run's training stages saw against what it tests on: decontaminated pretraining and the leakage
audit of every result.

- **Decontamination** (``--decontaminate formula|structure``): a stage that is not the last of its chain
  (a pretraining stage, e.g. the AFLOW stage of ``double``) trains and selects its epoch without the records
  whose reduced formula / structure (:func:`paraisite_bench.overlap.matching_ids`) matches any record of the
  run's target datasets (every train and test dataset other than the stage's own). Decontaminating against
  the union keeps one pretraining stage per split for every target, so the cost does not multiply.
- **Audit**: for each result (cell × split), how many of its test records had their reduced formula, and how
  many their structure, among the records any stage of its chain trained on
  (:func:`paraisite_bench.overlap.seen_counts`).
"""

from __future__ import annotations

import dataclasses

from .errors import PluginFailure
from .overlap import formula_key, seen_counts
from .train import removed_ids, stage_ids

DECONTAMINATE_MODES = {
    "off": "pretraining stages train on every record of their dataset (the paper)",
    "formula": "pretraining stages leave out records whose reduced formula is in a target dataset",
    "structure": "pretraining stages leave out records whose structure matches one in a target dataset "
                 "(pymatgen StructureMatcher within reduced-formula groups)",
}


#: decontaminated.csv: the records each decontaminated pretraining dataset left out
DECONTAMINATED_FIELDS = ["dataset", "id", "formula", "by", "against"]


def decontamination(ctx, dataset: str, targets, by: str) -> dict | None:
    """The ``decontaminate`` option of a pretraining stage on ``dataset``: match ``by`` against ``targets``
    (atomic names, the stage's own left out), or None when off or nothing is left to match against."""
    own = set(ctx.atomic_names(dataset))
    against = sorted({a for t in targets for a in ctx.atomic_names(t)} - own)
    if by == "off" or not against:
        return None
    return {"by": by, "against": against}


def decontaminated_rows(ctx, stages) -> list[dict]:
    """decontaminated.csv: every record left out of a pretraining dataset, once per (dataset, rule)."""
    rows, seen = [], set()
    for spec in stages:
        deco = spec.options.get("decontaminate")
        rule = (spec.dataset, deco and deco["by"], deco and tuple(deco["against"]))
        if not deco or rule in seen:
            continue
        seen.add(rule)
        records = ctx.dataset(spec.dataset).records
        for rid in sorted(removed_ids(ctx, spec.dataset, spec.options)):
            rows.append({"dataset": spec.dataset, "id": rid, "formula": formula_key(records[rid]),
                         "by": deco["by"], "against": " ".join(deco["against"])})
    return rows


def chain_of(plan, key: str) -> list:
    """The stages of the chain that ends with stage ``key``, first stage first."""
    out = []
    while key:
        spec = plan.stages[key]
        out.append(spec)
        key = spec.parent
    return out[::-1]


def audit_cells(ctx, plan) -> list[dict]:
    """The plan's cells as dicts with ``leak_formula`` and ``leak_structure`` (None where the records of a
    stage or test could not be featurised: then the audit is unknown, not zero)."""
    trained: dict[str, list[str]] = {}
    out = []
    for cell in plan.cells:
        counts = {"formula": None, "structure": None}
        try:
            chain = chain_of(plan, cell.stage_key)
            for spec in chain:
                if spec.key not in trained:
                    trained[spec.key] = stage_ids(ctx, spec)[0]
            last = chain[-1]
            feats = ctx.features(last.backbone, cell.test)
            test_ids = [i for i in ctx.split(cell.test, cell.split, last.options).test if i in feats]
            counts = seen_counts(ctx, cell.test, test_ids, [(s.dataset, trained[s.key]) for s in chain])
        except PluginFailure:
            pass
        out.append({**dataclasses.asdict(cell), "leak_formula": counts["formula"],
                    "leak_structure": counts["structure"]})
    return out
