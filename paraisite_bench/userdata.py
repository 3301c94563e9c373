"""Bring your own data: ``paraisite-bench run --dataset-file FILE`` registers a dataset for one run.

Accepted inputs (``FILE`` or ``NAME=FILE``; the name defaults to the file's stem, lower case):

* a CSV file with the columns ``id``, ``kappa`` and ``cif`` and/or ``formula``;
* a JSON file: a list of such records, or ``{"records": [...]}`` (the built-in datasets' format);
* a folder of ``*.cif`` files plus exactly one CSV with the columns ``id`` and ``kappa``, where the
  id is a CIF file's stem.

``cif`` is either CIF text or the path of a CIF file, relative to the file that names it. A record
with a formula and no CIF serves composition backbones only. Records are validated one by one with
the built-ins' rules (κ a finite positive number, unique ids, a parsable ordered CIF); a bad record is
skipped and reported (``skipped.csv``), a bad file stops the run with one line (exit status 2).
"""

from __future__ import annotations

import csv
import json
import re
import warnings
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Iterable, Sequence

from .data import DatasetSpec, Record
from .errors import RecordError, UserError

PROVIDER = "--dataset-file"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_EXPECTED = "expected the columns id, kappa and cif (CIF text or a path) and/or formula"


@dataclass(frozen=True)
class UserRecord(Record):
    """A record read from a user's file; ``problem`` says why its CIF could not be read, if so."""

    problem: str = ""

    @cached_property
    def structure(self):
        if self.problem:
            raise RecordError(self.source, self.id, self.problem, "fix the path or remove this record")
        return super().structure


def _number(value):
    """κ as a float when it is one; anything else is kept as is for validation to reject by name."""
    if isinstance(value, bool):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _formula_of(cif: str) -> str:
    from pymatgen.core import Structure

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Structure.from_str(cif, fmt="cif").composition.reduced_formula
    except Exception:  # a broken CIF is reported when a structure backbone needs it
        return ""


def _record(raw: dict, index: int, base: Path, source: str) -> Record:
    rid = raw.get("id")
    rid = f"#{index + 1}" if rid is None or str(rid).strip() == "" else str(rid).strip()
    cif = raw.get("cif")
    cif = None if cif is None or str(cif).strip() == "" else str(cif)
    problem = ""
    if cif is not None and "\n" not in cif and not cif.lstrip().startswith("data_"):
        path = (base / cif.strip()).resolve()
        try:
            cif = path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            problem, cif = f"CIF file {path} cannot be read ({exc.strerror or type(exc).__name__})", None
    formula = str(raw.get("formula") or "").strip()
    if not formula and cif:
        formula = _formula_of(cif)
    return UserRecord(id=rid, formula=formula, value=_number(raw.get("kappa")), cif=cif, source=source,
                      problem=problem)


def _columns(path: Path, fields: Iterable[str], required: Sequence[str]) -> None:
    fields = [f for f in fields if f]
    missing = [c for c in required if c not in fields]
    if missing:
        raise UserError(f"{path}: no {' or '.join(repr(m) for m in missing)} column (columns: "
                        f"{', '.join(fields) or 'none'}); {_EXPECTED}")


def _read_csv(path: Path, source: str, folder_of_cifs: bool = False, kappa: bool = True) -> list[Record]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [(f or "").strip().lower() for f in (reader.fieldnames or [])]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path}: cannot read as CSV ({exc}); {_EXPECTED}") from None
    if not fields:
        raise UserError(f"{path}: the file is empty; {_EXPECTED}")
    rows = [{(k or "").strip().lower(): v for k, v in row.items()} for row in rows]
    required = ["id", "kappa"] if kappa else ["id"]
    if folder_of_cifs:
        _columns(path, fields, required)
        for row in rows:
            row["cif"] = f"{str(row.get('id') or '').strip()}.cif"
    else:
        _columns(path, fields, required)
        if "cif" not in fields and "formula" not in fields:
            raise UserError(f"{path}: neither a 'cif' nor a 'formula' column (columns: {', '.join(fields)}); "
                            f"{_EXPECTED}")
    if not rows:
        raise UserError(f"{path}: no records below the header; {_EXPECTED}")
    return [_record(row, i, path.parent, source) for i, row in enumerate(rows)]


def _read_json(path: Path, source: str, kappa: bool = True) -> list[Record]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: cannot read as JSON ({str(exc).splitlines()[0] if str(exc) else exc!r}); "
                        "expected a list of {id, kappa, cif or formula} or {records: [...]}") from None
    records = doc.get("records") if isinstance(doc, dict) else doc
    if not isinstance(records, list):
        raise UserError(f"{path}: no list of records; expected a list of {{id, kappa, cif or formula}} "
                        "or {records: [...]}")
    if not records:
        raise UserError(f"{path}: the list of records is empty")
    out = []
    for i, raw in enumerate(records):
        if not isinstance(raw, dict):
            raise UserError(f"{path}: record #{i + 1} is {type(raw).__name__}, not an object "
                            "{id, kappa, cif or formula}")
        raw = {str(k).strip().lower(): v for k, v in raw.items()}
        if kappa and "kappa" not in raw:
            raise UserError(f"{path}: record #{i + 1} ({raw.get('id', '?')!r}) has no 'kappa' "
                            f"(keys: {', '.join(raw) or 'none'}); {_EXPECTED}")
        out.append(_record(raw, i, path.parent, source))
    return out


def read_dataset_file(path: Path, source: str, kappa: bool = True) -> list[Record]:
    """The raw records of a CSV file, a JSON file or a folder of CIFs plus a CSV of κ. ``kappa=False``
    (inputs to predict): the ``kappa`` column or key may be absent (the records' value is then None)."""
    if not path.exists():
        raise UserError(f"--dataset-file {path}: no such file or folder")
    if path.is_dir():
        tables = sorted(path.glob("*.csv"))
        if len(tables) != 1:
            raise UserError(f"--dataset-file {path}: a folder must hold *.cif files and exactly one CSV of "
                            f"id,kappa (found {len(tables)} CSV files)")
        return _read_csv(tables[0], source, folder_of_cifs=True, kappa=kappa)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, source, kappa=kappa)
    if suffix == ".json":
        return _read_json(path, source, kappa=kappa)
    raise UserError(f"--dataset-file {path}: unknown format {suffix or '(no extension)'}; "
                    "give a .csv or .json file or a folder of CIFs with a CSV of κ")


def cif_record(path: Path, source: str) -> Record:
    """A record of one CIF file: its id is the file's stem, its formula read from the CIF, no κ."""
    return _record({"id": path.stem, "cif": str(path.resolve())}, 0, path.parent, source)


def _loader(records: tuple[Record, ...], _ctx) -> list[Record]:
    return list(records)


def dataset_specs(values: Sequence[str]) -> list[DatasetSpec]:
    """One DatasetSpec per ``--dataset-file`` value; the files are read (and checked) now."""
    specs: dict[str, DatasetSpec] = {}
    for value in values:
        name, sep, raw_path = value.partition("=")
        if not sep:
            raw_path, name = value, ""
        path = Path(raw_path.strip()).expanduser()
        name = (name.strip() or path.name.split(".")[0]).lower()
        if not _NAME.match(name):
            raise UserError(f"--dataset-file {value!r}: {name!r} is not a usable dataset name "
                            "(letters, digits, _ . -): give NAME=PATH")
        if name in specs:
            raise UserError(f"--dataset-file {value!r}: dataset name {name!r} is given twice: give NAME=PATH")
        records = read_dataset_file(path, name)
        specs[name] = DatasetSpec(name=name, description=f"user data from {path}", citation=str(path),
                                  loader=partial(_loader, tuple(records)), plugin=PROVIDER)
    return list(specs.values())


def add_datasets(registry, specs: Sequence[DatasetSpec]) -> None:
    """Register user datasets for this run; a name that a plugin already provides is refused."""
    for spec in specs:
        if spec.name in registry.datasets:
            raise UserError(f"--dataset-file: dataset name {spec.name!r} is already provided by plugin "
                            f"{registry.providers[('dataset', spec.name)]!r}: "
                            "give another name with NAME=PATH")
        registry.datasets[spec.name] = spec
        registry.providers[("dataset", spec.name)] = PROVIDER


def check_inputs(registry, specs: Sequence[DatasetSpec], backbones: Sequence[str],
                 used: Iterable[str]) -> None:
    """A dataset without any CIF cannot feed a structure backbone: say so before anything runs."""
    used = set(used)
    for spec in specs:
        if spec.name not in used:
            continue
        records = spec.loader(None)
        if any(r.cif for r in records):
            continue
        for b in backbones:
            cls = registry.get("backbone", b)
            if cls.input_kind == "structure":
                raise UserError(f"{spec.citation}: no record has a CIF, so structure backbone {cls.name!r} "
                                "cannot use it: add a cif column or use a composition backbone")
