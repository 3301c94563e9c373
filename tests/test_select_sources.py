"""Published sources of the study's MEGNet candidates: the multi-fidelity band gap model."""

from __future__ import annotations

import pytest
import torch
from paraisite_megnet import MEGNetBackbone, MEGNetBandGapBackbone
from pymatgen.core import Lattice, Structure

from paraisite_bench.data import Record
from paraisite_bench.errors import UserError

# (spacegroup, a, species, coords, Materials Project PBE band gap in eV): NaCl (mp-22862) and Al (metal)
KNOWN = [("Fm-3m", 5.69, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], 5.0),
         ("Fm-3m", 4.05, ["Al"], [[0, 0, 0]], 0.0)]
#: The model's target normaliser (model.json: "Normalizer: Mean=1.57419002, Std: 1.85749567").
MEAN, STD = 1.57419002, 1.85749567


def _gaps(bb, module, fidelity=0):
    recs = []
    for sg, a, species, coords, _gap in KNOWN:
        s = Structure.from_spacegroup(sg, Lattice.cubic(a), species, coords)
        recs.append(Record(id="".join(species), formula=s.composition.reduced_formula, value=1.0,
                           cif=s.to(fmt="cif")))
    batch = bb.collate([bb.featurise(r) for r in recs])
    batch.state_attr = torch.full_like(batch.state_attr, fidelity)
    module.eval()
    with torch.no_grad():
        return (module.energy(batch) * STD + MEAN).tolist()


def test_bandgap_weights_load_strictly_and_predict_known_pbe_gaps(data_dir):
    bb = MEGNetBandGapBackbone()
    module = bb.build()
    info = bb.load_weights(module, "bandgap", data_dir)
    assert info["tensors_loaded"] == info["tensors_total"] == len(module.megnet.state_dict()) == 107
    pbe = _gaps(bb, module, 0)
    for got, ref in zip(pbe, KNOWN):
        assert got == pytest.approx(ref[-1], abs=0.3)
    # the state input is the fidelity: GLLB-SC (1) predicts a much wider NaCl gap than PBE (0)
    assert _gaps(bb, module, 1)[0] > pbe[0] + 2.0
    assert module(bb.collate([bb.featurise(Record(
        id="x", formula="Al", value=1.0,
        cif=Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.05), ["Al"], [[0, 0, 0]]).to(fmt="cif")))])
    ).shape == (1, 16)


def test_bandgap_weights_do_not_fit_the_eform_architecture(data_dir):
    eform = MEGNetBackbone()
    with pytest.raises(UserError, match="differs from this backbone"):
        _load_into_eform(data_dir)
    with pytest.raises(UserError, match="no published weights 'bandgap'"):
        eform.resolve_source("bandgap")


def _load_into_eform(data_dir):
    """Point the eform backbone at the band gap folder: its model.json must be refused."""
    from paraisite_megnet import BANDGAP_SOURCES

    class Probe(MEGNetBackbone):
        sources = {"bandgap": BANDGAP_SOURCES["bandgap"]}

    probe = Probe()
    return probe.load_weights(probe.build(), "bandgap", data_dir)
