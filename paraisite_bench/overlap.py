"""Which records are "the same": group keys (formula, chemical system, prototype), structure matches
within and across datasets, and what a split leaks.

Definitions (used by grouped splits, by ``paraisite-bench audit`` and by decontamination):

* formula key: pymatgen ``Composition(formula).reduced_formula`` (the structure's composition when a
  record has no formula);
* chemsys key: ``Composition.chemical_system`` (elements sorted, joined by ``-``);
* prototype key: ``anonymized formula|space-group number|multiplicities`` of the structure, where the
  multiplicities are the sizes of its symmetry-distinct site orbits in the conventional standard cell
  (sorted), from ``SpacegroupAnalyzer(symprec=PROTOTYPE_SYMPREC, angle_tolerance=PROTOTYPE_ANGLE_TOL)``.
  Wyckoff letters are left out on purpose: they depend on the origin choice (Dataset1's zincblende
  compounds come out as 1a+1c for 14 and 1a+1d for 16 records, one prototype), and a canonical choice
  needs the space group's normalizer. So ZnS and GaAs zincblende share ``AB|216|4_4``, rocksalt is
  ``AB|225|4_4``, wurtzite ``AB|186|2_2``, half-Heusler ``ABC|216|4_4_4``. A record without a usable
  structure gets ``formula:<reduced formula>`` (grouped with its formula, never alone by accident). This
  follows the idea of MatFold's structure-prototype split (Witman & Schindler, Digital Discovery 2025),
  computed here so that the key and the split assignment are ours; MatFold itself is not used.
* structure match: pymatgen ``StructureMatcher`` with its default tolerances (ltol 0.2, stol 0.3,
  angle_tol 5°, primitive cell, volume scaled; :data:`MATCHER`), tried only between records with the
  same reduced formula.

Symmetry keys and matches are cached on disk under ``ctx.cache_dir / "overlap"``, keyed by the datasets'
fingerprints and the settings above; and in memory on ``ctx.derived`` for the run. ``ctx`` is a
:class:`paraisite_bench.context.Context` everywhere (not imported here: the context imports this module).
"""

from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import RecordError, UserError
from .protocol import SplitOptions, stable_hash

if TYPE_CHECKING:
    from .data import Record

PROTOTYPE_SYMPREC = 0.1
PROTOTYPE_ANGLE_TOL = 5.0
#: StructureMatcher's settings (pymatgen's defaults, written out so that they are part of cache keys).
MATCHER = {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0, "primitive_cell": True, "scale": True,
           "attempt_supercell": False}
BY = ("formula", "structure")


# ---- group keys -------------------------------------------------------------------------------

def formula_key(rec: "Record") -> str:
    """The reduced formula of a record ('' when it has neither a parsable formula nor a structure)."""
    from pymatgen.core import Composition

    if rec.formula:
        try:
            with warnings.catch_warnings():  # noble gases: "no Pauling electronegativity", harmless here
                warnings.simplefilter("ignore")
                return Composition(rec.formula).reduced_formula
        except Exception:  # a formula pymatgen cannot read: fall back to the structure
            pass
    structure = _structure(rec)
    return structure.composition.reduced_formula if structure is not None else ""


def chemsys_key(rec: "Record") -> str:
    from pymatgen.core import Composition

    formula = formula_key(rec)
    return Composition(formula).chemical_system if formula else ""


def prototype_key(rec: "Record") -> str:
    """``anonymized formula|space group|orbit multiplicities`` (see the module's docstring)."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    structure = _structure(rec)
    if structure is None:
        return f"formula:{formula_key(rec)}"
    tol = {"symprec": PROTOTYPE_SYMPREC, "angle_tolerance": PROTOTYPE_ANGLE_TOL}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sga = SpacegroupAnalyzer(structure, **tol)
            number = sga.get_space_group_number()
            conventional = SpacegroupAnalyzer(sga.get_conventional_standard_structure(), **tol)
            orbits = sorted(len(g) for g in conventional.get_symmetrized_structure().equivalent_sites)
    except Exception:  # spglib fails on a few odd cells: group such a record with its formula
        return f"formula:{formula_key(rec)}"
    return f"{structure.composition.anonymized_formula}|{number}|{'_'.join(map(str, orbits))}"


KEYS = {"formula": formula_key, "chemsys": chemsys_key, "prototype": prototype_key}


def _structure(rec: "Record"):
    if not rec.cif:
        return None
    try:
        return rec.structure
    except RecordError:
        return None


def _memo(ctx) -> dict:
    return ctx.derived.setdefault("overlap", {})


def _cache_file(ctx, stem: str, key_parts) -> Path:
    return Path(ctx.cache_dir) / "overlap" / f"{stem}-{stable_hash(key_parts)}.json"


def _cached(path: Path, compute):
    """The JSON value stored at ``path``, or ``compute()`` stored there (a broken file is recomputed)."""
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
    return value


def group_keys(ctx, dataset: str, by: str) -> dict[str, str]:
    """id -> group key (``by``: formula, chemsys or prototype) of every record of a dataset (union
    datasets: of their components); prototype keys are cached on disk."""
    if by not in KEYS:
        raise UserError(f"unknown grouping {by!r}: use one of {', '.join(KEYS)}")
    out: dict[str, str] = {}
    for name in ctx.atomic_names(dataset):
        memo = _memo(ctx)
        if (by, name) not in memo:
            loaded = ctx.dataset(name)

            def compute(loaded=loaded):
                return {rid: KEYS[by](rec) for rid, rec in loaded.records.items()}

            if by == "prototype":
                settings = {"symprec": PROTOTYPE_SYMPREC, "angle_tol": PROTOTYPE_ANGLE_TOL, "v": 2}
                path = _cache_file(ctx, f"prototype-{name}", [loaded.fingerprint, settings])
                memo[(by, name)] = _cached(path, compute)
            else:
                memo[(by, name)] = compute()
        out.update(memo[(by, name)])
    return out


# ---- structure matches ------------------------------------------------------------------------

def _by_formula(ctx, name: str) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for rid, key in group_keys(ctx, name, "formula").items():
        if key:
            groups[key].append(rid)
    return {k: sorted(v) for k, v in groups.items()}


def _matcher():
    from pymatgen.analysis.structure_matcher import StructureMatcher

    return StructureMatcher(**MATCHER)


def _compute_matches(ctx, a: str, b: str) -> list[list[str]]:
    ga, gb = _by_formula(ctx, a), _by_formula(ctx, b)
    ra, rb = ctx.dataset(a).records, ctx.dataset(b).records
    matcher, pairs = _matcher(), []
    for formula in sorted(set(ga) & set(gb)):
        if a == b:
            candidates = combinations(ga[formula], 2)
        else:
            candidates = ((x, y) for x in ga[formula] for y in gb[formula])
        for x, y in candidates:
            sx, sy = _structure(ra[x]), _structure(rb[y])
            if sx is None or sy is None:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if matcher.fit(sx, sy):
                    pairs.append([x, y])
    return pairs


def structure_matches(ctx, a: str, b: str) -> list[tuple[str, str]]:
    """Pairs (id in ``a``, id in ``b``) of records of two atomic datasets with the same reduced formula
    whose structures match (:data:`MATCHER`); ``a == b``: each pair of distinct twins once, with
    id_x < id_y. Records without a usable structure match nothing. Cached on disk."""
    memo = _memo(ctx)
    if ("match", a, b) not in memo:
        fa, fb = ctx.dataset(a).fingerprint, ctx.dataset(b).fingerprint
        path = _cache_file(ctx, f"match-{a}-{b}", [fa, fb, MATCHER, "v1"])
        memo[("match", a, b)] = [tuple(p) for p in _cached(path, lambda: _compute_matches(ctx, a, b))]
    return memo[("match", a, b)]


def _partners(ctx, a: str, b: str) -> dict[str, set[str]]:
    """id in atomic ``a`` -> ids of atomic ``b`` with a matching structure (a record matches itself); built
    once per run (the leakage audit asks for it for every cell)."""
    memo = _memo(ctx)
    if ("partners", a, b) not in memo:
        out: dict[str, set[str]] = defaultdict(set)
        for x, y in structure_matches(ctx, a, b):
            out[x].add(y)
            if a == b:
                out[y].add(x)
        if a == b:
            for rid in ctx.dataset(a).records:
                out[rid].add(rid)
        memo[("partners", a, b)] = dict(out)
    return memo[("partners", a, b)]


def matching_ids(ctx, dataset: str, against: list[str], by: str) -> set[str]:
    """Ids of ``dataset`` whose reduced formula (``by="formula"``) or structure (``by="structure"``)
    matches a record of any dataset of ``against`` (union datasets expand to their components)."""
    if by not in BY:
        raise UserError(f"matching by {by!r}: use one of {', '.join(BY)}")
    others = list(dict.fromkeys(n for d in against for n in ctx.atomic_names(d)))
    out: set[str] = set()
    for name in ctx.atomic_names(dataset):
        if by == "formula":
            formulas = {k for o in others for k in group_keys(ctx, o, "formula").values() if k}
            out |= {rid for rid, k in group_keys(ctx, name, "formula").items() if k in formulas}
        else:
            for other in others:
                out |= {rid for rid, ys in _partners(ctx, name, other).items() if ys}
    return out


def _owner(ctx, dataset: str) -> dict[str, str]:
    """id -> the atomic dataset that holds it."""
    return {rid: name for name in ctx.atomic_names(dataset) for rid in ctx.dataset(name).records}


def seen_counts(ctx, test_dataset: str, test_ids: Iterable[str],
                trained: list[tuple[str, list[str]]]) -> dict:
    """``{"formula": n, "structure": n}``: how many of ``test_ids`` (records of ``test_dataset``) have
    their reduced formula / a matching structure among the trained records ``[(dataset, ids), ...]``.
    A test record that was itself trained on counts as both."""
    test_ids = list(test_ids)
    owner = _owner(ctx, test_dataset)
    keys = group_keys(ctx, test_dataset, "formula")
    trained_formulas: set[str] = set()
    trained_by_atomic: dict[str, set[str]] = defaultdict(set)
    for dataset, ids in trained:
        tk, town = group_keys(ctx, dataset, "formula"), _owner(ctx, dataset)
        for rid in ids:
            trained_formulas.add(tk[rid])
            trained_by_atomic[town[rid]].add(rid)
    seen_structure = set()
    for test_name in set(owner[i] for i in test_ids):
        for train_name, ids in trained_by_atomic.items():
            partners = _partners(ctx, test_name, train_name)
            seen_structure |= {i for i in test_ids if owner[i] == test_name and partners.get(i, set()) & ids}
    return {"formula": sum(1 for i in test_ids if keys[i] and keys[i] in trained_formulas),
            "structure": len(seen_structure)}


# ---- summaries --------------------------------------------------------------------------------

def duplicated_formulas(ctx, dataset: str) -> dict[str, list[str]]:
    """Reduced formula -> ids, for every formula held by more than one record of ``dataset``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for rid, key in group_keys(ctx, dataset, "formula").items():
        groups[key].append(rid)
    return {k: sorted(v) for k, v in sorted(groups.items()) if len(v) > 1 and k}


def overlap_summary(ctx, datasets: list[str]) -> list[dict]:
    """One row per dataset (its duplicated formulas and structure twins) and one per pair of datasets
    (formula and structure overlap: records of each side, formulas, examples)."""
    rows = []
    for d in datasets:
        dup = duplicated_formulas(ctx, d)
        twins = [p for a in ctx.atomic_names(d) for p in structure_matches(ctx, a, a)]
        rows.append({"kind": "dataset", "dataset": d, "records": len(ctx.dataset(d).records),
                     "duplicated_formulas": len(dup), "records_in_duplicates": sum(map(len, dup.values())),
                     "formula_examples": list(dup)[:6], "structure_twin_pairs": len(twins),
                     "structure_examples": [list(p) for p in twins[:3]]})
    for a, b in combinations(datasets, 2):
        fa, fb = group_keys(ctx, a, "formula"), group_keys(ctx, b, "formula")
        common = (set(fa.values()) & set(fb.values())) - {""}
        sa = matching_ids(ctx, a, [b], "structure")
        sb = matching_ids(ctx, b, [a], "structure")
        sform = {fa[i] for i in sa}
        rows.append({"kind": "pair", "a": a, "b": b,
                     "formula_records_a": sum(1 for k in fa.values() if k in common),
                     "formula_records_b": sum(1 for k in fb.values() if k in common),
                     "formulas": len(common), "formula_examples": sorted(common)[:6],
                     "structure_records_a": len(sa), "structure_records_b": len(sb),
                     "structure_formulas": len(sform), "structure_examples": sorted(sform)[:6]})
    return rows


def split_fractions(ctx, dataset: str, options: SplitOptions,
                    splits: int | None = None) -> list[float]:
    """The held-out (test) fraction of each split r < ``splits`` (default: the protocol's) of a dataset."""
    n = ctx.protocol.splits if splits is None else splits
    out = []
    for r in range(n):
        s = ctx.split(dataset, r, options)
        out.append(len(s.test) / max(1, len(s.test) + len(s.train)))
    return out


def leak_per_split(ctx, dataset: str, options: SplitOptions, splits: int) -> list[dict]:
    """Per split: test records, test fraction, and how many test records have a formula twin / a matching
    structure in the training part of the same split (the record itself is never in both parts)."""
    out = []
    for r in range(splits):
        s = ctx.split(dataset, r, options)
        seen = seen_counts(ctx, dataset, s.test, [(dataset, list(s.train))])
        out.append({"split": r, "test": len(s.test), "fraction": len(s.test) / (len(s.test) + len(s.train)),
                    **seen})
    return out


def leaders(ctx, dataset: str, candidates: list[str]) -> list[tuple[str, dict[str, str]]]:
    """The atomic datasets among ``candidates`` that share records with ``dataset`` (same id with the same
    reduced formula, or a matching structure), as ``(name, {id in dataset: id there})``, the one sharing
    the most records first (ties: by name): a record follows the first one that holds it."""
    mine = group_keys(ctx, dataset, "formula")
    out = []
    for name in candidates:
        theirs = group_keys(ctx, name, "formula")
        mapping = {rid: rid for rid, k in mine.items() if rid in theirs and theirs[rid] == k}
        for x, y in structure_matches(ctx, dataset, name):
            mapping.setdefault(x, y)  # pairs come sorted: the first matching id there
        if mapping:
            out.append((name, mapping))
    return sorted(out, key=lambda t: (-len(t[1]), t[0]))


# ---- audit ------------------------------------------------------------------------------------

def _spread(values: list[float], fmt: str) -> str:
    return f"{sum(values) / len(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def _eg(examples: list[str]) -> str:
    return f" (e.g. {', '.join(examples)})" if examples else ""


def _overlap_line(row: dict) -> str:
    if row["kind"] == "dataset":
        return (f"  {row['dataset']}: {row['records']} records; {row['duplicated_formulas']} formulas held"
                f" by 2+ records ({row['records_in_duplicates']} records){_eg(row['formula_examples'])}; "
                f"{row['structure_twin_pairs']} pairs of matching structures")
    if not row["formulas"]:
        return f"  {row['a']} ∩ {row['b']}: no common formula"
    formula = (f"formula {row['formula_records_a']} / {row['formula_records_b']} records, "
               f"{row['formulas']} formulas{_eg(row['formula_examples'])}")
    structure = (f"structure {row['structure_records_a']} / {row['structure_records_b']} records, "
                 f"{row['structure_formulas']} formulas{_eg(row['structure_examples'])}")
    return f"  {row['a']} ∩ {row['b']}: {formula}; {structure}"


def audit_lines(ctx, datasets: list[str], options: SplitOptions, splits: int) -> list[str]:
    """What ``paraisite-bench audit`` prints: the overlaps of ``datasets`` and, per dataset, the test
    fraction of each split and how many test records have a formula twin / a matching structure in the
    training part of the same split (mean, range over the splits)."""
    m = MATCHER
    lines = [f"overlaps (formula: pymatgen reduced formula; structure: StructureMatcher ltol {m['ltol']}, "
             f"stol {m['stol']}, angle_tol {m['angle_tol']}, within a formula)"]
    lines += [_overlap_line(row) for row in overlap_summary(ctx, datasets)]
    lines.append(f"splits (--split-by {options.split_by}, {splits} splits, seed {options.seed}, nominal test "
                 f"fraction {options.test_fraction}); test records with a twin in the training part of the "
                 "same split: mean (min–max)")
    for d in datasets:
        try:
            rows = leak_per_split(ctx, d, options, splits)
        except UserError as exc:
            lines.append(f"  {d}: {exc}")
            continue
        fractions = ", ".join(f"{r['fraction']:.3f}" for r in rows)
        has_cif = any(rec.cif for name in ctx.atomic_names(d) for rec in ctx.dataset(name).records.values())
        structure = _spread([r["structure"] for r in rows], ".2f") if has_cif else "n/a (no structures)"
        lines.append(f"  {d}: test fraction per split {fractions}; test records "
                     f"{_spread([r['test'] for r in rows], '.1f')}; with a formula twin in training "
                     f"{_spread([r['formula'] for r in rows], '.2f')}; with a matching structure "
                     f"{structure}")
    return lines
