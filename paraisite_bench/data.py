"""Records, dataset specifications, the data root, and record validation."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Sequence

from .errors import RecordError, UserError
from .targets import KAPPA_KIND, REGRESSION_KIND, TargetKind

DATA_ENV = "PARAISITE_BENCH_DATA"


@dataclass(frozen=True)
class Record:
    """One material: an id, a reduced formula, the value of its dataset's target (κ in W/(m K) at 300 K
    for the paper's datasets; see :class:`Target`) and (optionally) a CIF."""

    id: str
    formula: str
    value: float
    cif: str | None = None
    source: str = ""

    @cached_property
    def structure(self):
        """The pymatgen Structure parsed from ``cif`` (raises RecordError if it does not parse)."""
        if not self.cif:
            raise RecordError(self.source, self.id, "has no crystal structure (CIF)",
                              "a structure backbone needs a CIF for every record")
        return parse_cif(self.cif, self.source, self.id)


def parse_cif(text: str, source: str, record_id: str):
    """Parse CIF text into an ordered pymatgen Structure, or raise a RecordError that says why."""
    from pymatgen.core import Structure  # ~1 s to import: only once a CIF is parsed

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            structure = Structure.from_str(text, fmt="cif")
    except Exception as exc:  # pymatgen raises many kinds of errors on broken CIFs
        if _cif_without_atoms(text):
            raise RecordError(source, record_id, "CIF has no atoms", "fix or remove this record") from None
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RecordError(source, record_id, f"CIF does not parse ({msg[:120]})",
                          "fix or remove this record") from None
    if len(structure) == 0:
        raise RecordError(source, record_id, "CIF has no atoms", "fix or remove this record")
    if not structure.is_ordered:
        raise RecordError(source, record_id, "structure is disordered (partial occupancies)",
                          "give an ordered structure")
    if not (0.1 < structure.volume / len(structure) < 1e4):
        raise RecordError(source, record_id,
                          f"absurd cell volume ({structure.volume:.3g} Å^3 for {len(structure)} atoms)",
                          "check the lattice parameters")
    return structure


def _cif_without_atoms(text: str) -> bool:
    """True if the CIF lists no atom site (pymatgen fails on such a file with an obscure error)."""
    lines = [line.strip() for line in text.splitlines()]
    headers = [i for i, line in enumerate(lines) if line.startswith("_atom_site_")]
    if not headers:
        return True
    rows = lines[headers[-1] + 1:]
    return not any(line and not line.startswith(("_", "loop_", "#", "data_")) for line in rows)


@dataclass(frozen=True)
class Target:
    """What a dataset's ``Record.value`` holds: its name and units, its :class:`~.targets.TargetKind`
    (transform, loss, metric) and whether values must be > 0 (κ) rather than only finite."""

    name: str = "kappa"
    units: str = "W/(m K)"
    kind: TargetKind = KAPPA_KIND
    positive: bool = True


#: The default target: lattice thermal conductivity at 300 K.
KAPPA = Target()


def regression_target(name: str, units: str, positive: bool = False) -> Target:
    """A non-κ regression target: standardised, trained by L1, scored by MAE."""
    return Target(name=name, units=units, kind=REGRESSION_KIND, positive=positive)


@dataclass
class LoadContext:
    """What a dataset loader gets: the data root (``ltc/``, ``models/`` below it)."""

    data_dir: Path

    def path(self, *parts: str) -> Path:
        p = self.data_dir.joinpath(*parts)
        if not p.exists():
            raise UserError(f"data file {p} is missing: the data root ({self.data_dir}) must hold "
                            f"{'/'.join(parts)} (set --data-dir or {DATA_ENV})")
        return p


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset contributed by a plugin.

    ``loader(ctx) -> list[Record]`` returns the raw records; the core validates them.
    ``components`` makes this dataset the union of others (e.g. MIX = Dataset1 ∪ Dataset2):
    then ``loader`` is unused and split r is the union of the components' splits r.
    ``fingerprint(ctx)`` returns a checksum of the data (default: hash of the loaded records).
    ``subset_of`` names the dataset this one takes its records from, so that both split them alike.
    """

    name: str
    description: str
    citation: str = ""
    loader: Callable[[LoadContext], list[Record]] | None = None
    components: tuple[str, ...] = ()
    display_name: str = ""
    plugin: str = field(default="", compare=False)
    #: What the records' value is (default κ); see :class:`Target`.
    target: Target = KAPPA
    #: "structure" (records carry CIFs) or "composition" (formulas only: structure backbones skip it).
    input_kind: str = "structure"
    #: The dataset whose records this one re-uses (e.g. "dataset1"): in random splits its split r is
    #: the parent's split r restricted to its ids (records not in the parent: their own permutation).
    subset_of: str = ""

    @property
    def label(self) -> str:
        return self.display_name or self.name


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The data root from ``--data-dir`` or ``$PARAISITE_BENCH_DATA``; one clear error if absent."""
    raw = data_dir or os.environ.get(DATA_ENV)
    if not raw:
        raise UserError(f"no data root: pass --data-dir DIR or set {DATA_ENV}=DIR, where DIR holds "
                        "ltc/*.json.gz and models/* (e.g. ../shared/data)")
    path = Path(raw).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"data root {path} does not exist: it must hold ltc/*.json.gz and models/* "
                        f"(set --data-dir or {DATA_ENV})")
    return path


def read_ltc_json(path: Path, source_name: str) -> tuple[dict, list[Record]]:
    """Read a ``{name, description, records:[{id, formula, kappa, cif}]}`` (optionally gzip) file."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            doc = json.load(fh)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as JSON ({exc}); expected "
                        "{name, records:[{id, formula, kappa, cif}]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise UserError(f"{path}: no 'records' list; "
                        "expected {name, records:[{id, formula, kappa, cif}]}")
    records = []
    for i, r in enumerate(doc["records"]):
        if not isinstance(r, dict):
            records.append(Record(id=f"#{i}", formula="", value=float("nan"), source=source_name))
            continue
        records.append(Record(id=str(r.get("id", f"#{i}")), formula=str(r.get("formula", "")),
                              value=r.get("kappa"), cif=r.get("cif"), source=source_name))
    return doc, records


def validate_records(name: str, records: Sequence[Record],
                     target: Target = KAPPA) -> tuple[list[Record], list[RecordError]]:
    """Keep good records; return the bad ones as RecordErrors (NaN, not a number, duplicate id, and
    value ≤ 0 for a positive target such as κ)."""
    what, units = ("kappa", "κ") if target.name == "kappa" else (target.name, target.name)
    unit_hint = f"give {units} in {target.units}" if target.units else f"give {units} as a number"
    good: list[Record] = []
    bad: list[RecordError] = []
    seen: set[str] = set()
    for r in records:
        try:
            value = float(r.value)
        except (TypeError, ValueError):
            bad.append(RecordError(name, r.id, f"{what} {r.value!r} is not a number", unit_hint))
            continue
        if math.isnan(value) or math.isinf(value):
            bad.append(RecordError(name, r.id, f"{what} is {value}", f"{unit_hint} (finite)"))
            continue
        if target.positive and value <= 0:
            bad.append(RecordError(name, r.id, f"{what} {value} ≤ 0",
                                   f"{units} must be positive ({target.units})"))
            continue
        if r.id in seen:
            bad.append(RecordError(name, r.id, "duplicate id", "ids must be unique; the first one is kept"))
            continue
        seen.add(r.id)
        good.append(r if value == r.value else Record(r.id, r.formula, value, r.cif, r.source))
    return good, bad


def records_fingerprint(records: Sequence[Record]) -> str:
    """A checksum of the records' content (id, value, CIF), independent of where they were read from."""
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.id}\x1f{r.value!r}\x1f{r.cif or r.formula}\x1e".encode())
    return h.hexdigest()[:16]
