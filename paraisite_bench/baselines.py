"""Baselines in a run: every registered baseline (:class:`paraisite_bench.baseline.Baseline`) fitted on split
r's training part of each training dataset and scored on split r's test part of each test dataset — the
same records a trained model of that cell is scored on — keyed and stored like a stage, computed in the main
process before the training jobs (seconds)."""

from __future__ import annotations

import traceback
from typing import Callable, Iterable, Mapping

import numpy as np

from .context import Context
from .errors import PluginFailure, RecordError, UserError
from .jobs import Plan, structures_missing
from .protocol import SplitOptions, stable_hash
from .store import Store


def baseline_mismatch(ctx: Context, baseline, datasets: Iterable[str]) -> str | None:
    """Why ``baseline`` (a class or instance) cannot use one of ``datasets`` (a structure baseline on a
    composition-only dataset), or None."""
    if baseline.needs != "structure":
        return None
    return structures_missing(ctx, datasets, f"baseline {baseline.name} needs structures")


def plan_baselines(ctx: Context, plan: Plan, names: Iterable[str]) -> None:
    """Make ``names`` the plan's baselines; each one that cannot use a dataset of the plan's cells gets a
    ("baseline", name, reason) line in ``plan.skipped`` (skipped.csv) and is left out of those cells only."""
    names = tuple(_registered(ctx, n) for n in names)
    plan.baselines = names
    datasets = list(dict.fromkeys(d for c in plan.cells for d in (c.train, c.test)))
    for name in names:
        for d in datasets:
            reason = baseline_mismatch(ctx, ctx.registry.get("baseline", name), [d])
            if reason:
                plan.skipped.append(("baseline", name, reason))


def _registered(ctx: Context, name: str) -> str:
    """The registry's name of baseline ``name`` (one clear error for an unknown one)."""
    ctx.registry.get("baseline", name)
    return name.strip().lower()


def plan_cells(plan: Plan) -> tuple[list[tuple[str, str, int]], Callable[[str], Mapping]]:
    """The plan's distinct (train, test, split) cells, in plan order, and ``options_for(train)``: the options
    of the stage that each cell with that training dataset evaluates (what splits its test part too)."""
    cells = list(dict.fromkeys((c.train, c.test, c.split) for c in plan.cells))
    options = {}
    for c in plan.cells:
        options.setdefault(c.train, plan.stages[c.stage_key].options)
    return cells, options.__getitem__


def baseline_key(ctx: Context, name: str, train: str, test: str, r: int, options: Mapping) -> str:
    """What determines a baseline's result: its plugin's identity (and the datasets' plugins'), the data
    fingerprints, the split options (only those: epochs or learning rate change no baseline), train, test
    and r."""
    atoms = list(dict.fromkeys(ctx.atomic_names(train) + ctx.atomic_names(test)))
    plugins = ctx.registry.identities([("baseline", name), *(("dataset", a) for a in atoms)])
    split = SplitOptions.of(options)
    return stable_hash({
        "baseline": name, "plugins": plugins, "data": {a: ctx.dataset(a).fingerprint for a in atoms},
        "split_options": [split.seed, split.test_fraction, split.inner_val_fraction],
        "train": train, "test": test, "split": r,
    })


def _formula_parses(formula: str) -> bool:
    from pymatgen.core import Composition  # ~1 s to import: only once a baseline runs

    try:
        comp = Composition(formula)
        return len(comp) > 0 and comp.valid  # valid: no dummy species ("Xq2" parses as one)
    except Exception:  # pymatgen raises many kinds of errors on a malformed formula
        return False


def _usable(records: list, needs: str) -> list:
    """The records a baseline can read: a composition baseline those whose formula parses (or, lacking one,
    whose CIF parses), a structure baseline those whose CIF parses (the others are skipped by every backbone
    of that kind too, and reported in skipped.csv by its featurisation)."""
    out = []
    for rec in records:
        if needs == "composition" and rec.formula:
            if _formula_parses(rec.formula):
                out.append(rec)
            continue
        try:
            rec.structure
        except RecordError:
            continue
        out.append(rec)
    return out


def score_cell(ctx: Context, name: str, train: str, test: str, r: int, options: Mapping) -> dict:
    """One baseline on one cell: fitted on split r's training part of ``train``, scored on split r's test
    part of ``test`` (split with ``options``, as :func:`paraisite_bench.train.evaluate` splits it)."""
    baseline = ctx.registry.baseline(name)
    train_records = ctx.dataset(train).records
    test_records = ctx.dataset(test).records
    fit_on = _usable([train_records[i] for i in ctx.split(train, r, options).train], baseline.needs)
    scored = _usable([test_records[i] for i in ctx.split(test, r, options).test], baseline.needs)
    fitted = baseline.fit(fit_on, ctx.registry.dataset(train).target)
    pred = np.asarray(fitted.predict(scored), dtype=np.float64).reshape(-1)
    if pred.shape != (len(scored),):
        raise ValueError(f"predict returned {pred.size} values for {len(scored)} records")
    kind = ctx.registry.dataset(test).target.kind
    name = _registered(ctx, name)
    return {"baseline": name, "train": train, "test": test, "split": r, "n_test": len(scored),
            "metrics": kind.scores(pred, [rec.value for rec in scored]),
            "key": baseline_key(ctx, name, train, test, r, options)}


def baseline_results(ctx: Context, cells: Iterable[tuple[str, str, int]],
                     options_for: Callable[[str], Mapping], baselines: Iterable[str],
                     failures: list[PluginFailure] | None = None) -> list[dict]:
    """Each of ``baselines`` (registered names) on each (train, test, split r) of ``cells`` whose datasets it
    can use, split with ``options_for(train)``: one dict per result, ``{"baseline", "train", "test", "split",
    "n_test", "metrics": {metric name: value} (the test dataset's ``TargetKind.scores``), "key"}``.

    A baseline that raises is a :class:`PluginFailure` (its first error, with the cell): raised when
    ``failures`` is None, else appended to it, and that baseline's other cells are not tried."""
    cells = list(cells)
    out = []
    for name in baselines:
        name = _registered(ctx, name)
        cls = ctx.registry.get("baseline", name)
        for train, test, r in cells:
            if baseline_mismatch(ctx, cls, [train, test]):
                continue
            try:
                out.append(score_cell(ctx, name, train, test, r, options_for(train)))
            except UserError:  # a dataset that does not load: the user's to fix, not the baseline's bug
                raise
            except Exception as exc:
                plugin = ctx.registry.providers.get(("baseline", name), name)
                msg = str(exc).strip().splitlines()
                failure = PluginFailure(plugin, None, f"baseline {name} on {train} → {test} split {r}: "
                                        f"{type(exc).__name__}: {(msg[0] if msg else '')[:200]}",
                                        traceback.format_exc())
                if failures is None:
                    raise failure from exc
                failures.append(failure)
                break
    return out


def planned_baselines(ctx: Context, plan: Plan) -> list[tuple[str, tuple[str, str, int], str]]:
    """(baseline, (train, test, split), key) of every result the plan's baselines give (the cells each one can
    use)."""
    cells, options_for = plan_cells(plan)
    out = []
    for name in plan.baselines:
        cls = ctx.registry.get("baseline", name)
        out += [(name, c, baseline_key(ctx, name, *c, options_for(c[0]))) for c in cells
                if not baseline_mismatch(ctx, cls, c[:2])]
    return out


def run_baselines(ctx: Context, plan: Plan, store: Store, log=None) -> tuple[int, list[PluginFailure]]:
    """Compute and store the plan's baselines the store does not have yet. Returns how many results were
    computed and the failures (one per failed baseline, naming its plugin; logged with its traceback)."""
    if not plan.baselines:
        return 0, []
    _cells, options_for = plan_cells(plan)
    have = {row["key"] for row in store.baselines()}
    failures: list[PluginFailure] = []
    computed = 0
    for name in plan.baselines:
        todo = [c for b, c, key in planned_baselines(ctx, plan) if b == name and key not in have]
        results = baseline_results(ctx, todo, options_for, [name], failures)
        store.save_baselines(results)
        computed += len(results)
    for exc in failures:
        if log:
            log(f"{exc}\n{exc.traceback}")
    return computed, failures
