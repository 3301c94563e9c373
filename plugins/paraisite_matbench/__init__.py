"""Composition datasets for pretraining: matbench's composition regression tasks and the AFLOW AGL
composition table, as shipped inside the crabnet 2.0.8 package (offline, no download).

Row i of ``crabnet/data/matbench/<task>.csv`` is matbench's ``mb-<task>-<i+1>`` (matbench order), so
the ids below match matbench's official folds (``matbench_v0.1_validation.json``). Every dataset
registered here also gets the strategies ``pretrained:<name>`` (random → <name> → target) and
``double:<name>`` (random → <name> → AFLOW → target); see :mod:`paraisite_strategies`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import partial

from paraisite_bench import hookimpl
from paraisite_bench.data import KAPPA, DatasetSpec, LoadContext, Record, regression_target
from paraisite_bench.errors import UserError

CRABNET_INSTALL = "pip install --no-deps --ignore-requires-python crabnet==2.0.8 (see README set-up)"
MATBENCH_CITATION = "Dunn et al., npj Comput. Mater. 6, 138 (2020) (Matbench v0.1)"


@dataclass(frozen=True)
class Task:
    name: str  # our dataset name
    csv: str  # file under crabnet/data/matbench
    matbench: str  # matbench task name (folds, metadata)
    id_prefix: str  # matbench id prefix, e.g. mb-expt-gap
    quantity: str
    units: str
    description: str


TASKS = {t.name: t for t in (
    Task("expt_gap", "expt_gap.csv", "matbench_expt_gap", "mb-expt-gap", "band gap", "eV",
         "4,604 compositions, experimental band gap (Zhuo et al. 2018)"),
    Task("steels_yield", "steels_yield.csv", "matbench_steels", "mb-steels", "yield strength", "MPa",
         "312 steel compositions, yield strength"),
    Task("dielectric", "dielectric.csv", "matbench_dielectric", "mb-dielectric", "refractive index", "",
         "4,764 compositions, refractive index (DFPT, Materials Project)"),
    Task("elasticity_log10_kvrh", "elasticity_log10(K_VRH).csv", "matbench_log_kvrh", "mb-log-kvrh",
         "log10 K_VRH", "log10(GPa)",
         "10,987 compositions, log10 of the VRH bulk modulus (Materials Project)"),
    Task("elasticity_log10_gvrh", "elasticity_log10(G_VRH).csv", "matbench_log_gvrh", "mb-log-gvrh",
         "log10 G_VRH", "log10(GPa)",
         "10,987 compositions, log10 of the VRH shear modulus (Materials Project)"),
    Task("mp_e_form", "mp_e_form.csv", "matbench_mp_e_form", "mb-mp-e-form", "formation energy", "eV/atom",
         "132,752 compositions, DFT formation energy per atom (Materials Project; one row per structure, "
         "so a formula may appear several times)"),
    Task("phonons", "phonons.csv", "matbench_phonons", "mb-phonons", "last phonon DOS peak", "cm^-1",
         "1,265 compositions, frequency of the highest phonon DOS peak (Petretto et al. 2018)"),
)}

AFLOW_COMP = "aflow_comp"


def crabnet_data_file(*parts: str):
    """A data file shipped inside the crabnet package (one clear error if crabnet is absent)."""
    try:
        from importlib.resources import files

        path = files("crabnet").joinpath("data", *parts)
    except ModuleNotFoundError:
        raise UserError(f"the composition datasets come with the crabnet package, which is not installed: "
                        f"{CRABNET_INSTALL}") from None
    if not path.is_file():
        raise UserError(f"crabnet data file {'/'.join(parts)} is missing from the installed crabnet: "
                        f"reinstall it ({CRABNET_INSTALL})")
    return path


def _read_csv(path, source: str, make_id) -> list[Record]:
    with path.open("r", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    records = []
    for i, row in enumerate(rows):
        value = row.get("target")
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass  # validate_records reports it
        records.append(Record(id=make_id(i, len(rows)), formula=(row.get("formula") or "").strip(),
                              value=value, source=source))
    return records


def matbench_id(prefix: str, i: int, n: int) -> str:
    """matbench's id of row i (0-based) of a task with n samples: ``mb-<task>-<i+1>``, zero-padded
    to the width of n (mb-expt-gap-0001 … mb-expt-gap-4604)."""
    return f"{prefix}-{i + 1:0{len(str(n))}d}"


def load_task(task: Task, ctx: LoadContext | None = None) -> list[Record]:
    return _read_csv(crabnet_data_file("matbench", task.csv), task.name,
                     lambda i, n: matbench_id(task.id_prefix, i, n))


def load_aflow_comp(ctx: LoadContext | None = None) -> list[Record]:
    records = []
    for part in ("train", "val", "test"):
        path = crabnet_data_file("benchmark_data", "aflow__agl_thermal_conductivity_300K", f"{part}.csv")
        records += _read_csv(path, AFLOW_COMP, lambda i, n, p=part: f"aflow-agl-{p}-{i + 1:04d}")
    return records


def dataset_specs() -> list[DatasetSpec]:
    specs = [DatasetSpec(name=t.name, display_name=t.matbench, input_kind="composition",
                         description=f"{t.description} [{t.quantity}" + (f", {t.units}]" if t.units else "]"),
                         citation=MATBENCH_CITATION, loader=partial(load_task, t),
                         target=regression_target(t.quantity, t.units))
             for t in TASKS.values()]
    specs.append(DatasetSpec(
        name=AFLOW_COMP, display_name="AFLOW AGL (compositions)", input_kind="composition", target=KAPPA,
        description="4,888 AFLOW compositions with the AGL κ at 300 K (CrabNet's benchmark table)",
        citation="Toher et al., PRB 90, 174107 (2014); "
                 "Wang et al., npj Comput. Mater. 7, 77 (2021) (CrabNet)",
        loader=load_aflow_comp))
    return specs


@hookimpl
def register_datasets(register):
    for spec in dataset_specs():
        register(spec)


@hookimpl
def register_strategies(register):
    from paraisite_strategies import pretraining_strategies

    for spec in dataset_specs():
        for strategy in pretraining_strategies(spec.name, spec.label):
            register(strategy)
