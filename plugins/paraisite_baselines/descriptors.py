"""Features of records for the built-in baselines, computed once per record per process (in memory only:
seconds for AFLOW's 4,394 records), keyed by the record's source, id and content.

- :func:`magpie`: matminer's Magpie ``ElementProperty`` preset (132 composition statistics; the element data
  ships with matminer, no network), NaN where Magpie has no value for an element.
- :func:`structure_descriptors`: 8 cheap structure + composition descriptors of the parsed CIF.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from paraisite_bench.data import Record

_MAGPIE: dict[tuple, np.ndarray] = {}
_STRUCTURE: dict[tuple, np.ndarray] = {}
_REDUCED: dict[tuple, str] = {}
_FEATURISER = []


def record_key(rec: Record) -> tuple:
    return (rec.source, rec.id, rec.formula, rec.cif)


def composition(rec: Record):
    """The record's composition: its formula, else its structure's."""
    from pymatgen.core import Composition

    return Composition(rec.formula) if rec.formula else rec.structure.composition


def _featuriser():
    if not _FEATURISER:
        try:
            from matminer.featurizers.composition import ElementProperty
        except ImportError as exc:
            raise ImportError(f"{exc}: the knn baseline needs matminer "
                              "(pip install 'paraisite-bench[baselines]')") from None
        _FEATURISER.append(ElementProperty.from_preset("magpie"))
    return _FEATURISER[0]


def magpie(records: Sequence[Record]) -> np.ndarray:
    """(n, 132) Magpie composition features (matminer ``ElementProperty.from_preset("magpie")``: minimum,
    maximum, range, mean, average deviation and mode of 22 element properties over the formula)."""
    for rec in records:
        key = record_key(rec)
        if key not in _MAGPIE:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                row = _featuriser().featurize(composition(rec))
            _MAGPIE[key] = np.asarray(row, dtype=np.float64)
    return np.array([_MAGPIE[record_key(r)] for r in records]).reshape(len(records), -1)


def _structure_row(rec: Record) -> np.ndarray:
    s = rec.structure
    comp = s.composition
    elements = list(comp.elements)
    frac = np.array([comp.get_atomic_fraction(e) for e in elements])
    mass = np.array([float(e.atomic_mass) for e in elements])
    with warnings.catch_warnings():  # pymatgen warns (and gives NaN) for elements with no electronegativity
        warnings.simplefilter("ignore")
        chi = np.array([e.X for e in elements], dtype=np.float64)
    # nearest-neighbour distance of each site: another site (minimum image), or its own periodic image
    self_image = min(s.lattice.get_lll_reduced_lattice().abc)
    nn = np.full(len(s), self_image)
    if len(s) > 1:
        dist = np.array(s.distance_matrix)
        np.fill_diagonal(dist, np.inf)
        nn = np.minimum(nn, dist.min(axis=1))
    return np.array([
        np.log10(s.volume / len(s)), float(s.density), nn.mean(),
        np.log10(frac @ mass), np.log10(mass.max() / mass.min()),
        np.nansum(frac * chi) / frac[~np.isnan(chi)].sum() if (~np.isnan(chi)).any() else np.nan,
        np.nanmax(chi) - np.nanmin(chi) if (~np.isnan(chi)).any() else np.nan,
        len(elements),
    ])


#: names of :func:`structure_descriptors`' columns
STRUCTURE_DESCRIPTORS = ("log10 volume per atom", "density", "mean nearest-neighbour distance",
                         "log10 mean atomic mass", "log10 max/min atomic mass",
                         "mean Pauling electronegativity", "electronegativity range", "number of elements")


def structure_descriptors(records: Sequence[Record]) -> np.ndarray:
    """(n, 8) descriptors of the parsed structures (:data:`STRUCTURE_DESCRIPTORS`): volume, density and bond
    length set the stiffness, masses the phonon frequencies, electronegativities the bonding — what κ
    depends on most (Slack's model), at the cost of one CIF parse and one distance matrix per record."""
    for rec in records:
        key = record_key(rec)
        if key not in _STRUCTURE:
            _STRUCTURE[key] = _structure_row(rec)
    return np.array([_STRUCTURE[record_key(r)] for r in records]).reshape(len(records), -1)


def reduced_formula(rec: Record) -> str:
    key = record_key(rec)
    if key not in _REDUCED:
        _REDUCED[key] = rec.structure.composition.reduced_formula
    return _REDUCED[key]


class Standardiser:
    """Column means and standard deviations of the training features (NaN ignored); a column constant on the
    training part keeps scale 1, and a missing value becomes the training mean (0 once standardised)."""

    def __init__(self, X: np.ndarray):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # all-NaN columns
            self.mean = np.nan_to_num(np.nanmean(X, axis=0))
            std = np.nanstd(X, axis=0)
        self.std = np.where(np.isfinite(std) & (std > 0), std, 1.0)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.nan_to_num((X - self.mean) / self.std, nan=0.0)
