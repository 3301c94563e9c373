"""The MEGNet backbone and matgl's published weights."""

from __future__ import annotations

import pytest
import torch
from paraisite_megnet import MEGNetBackbone
from pymatgen.core import Lattice, Structure

from paraisite_bench.data import Record
from paraisite_bench.errors import RecordError, UserError

# DGL reference predictions of MEGNet-MP-2018.6.1-Eform (eV/atom), given in the spine issue.
REFERENCE = [
    ("Fm-3m", 5.69, ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], -2.1145),
    ("Fm-3m", 4.26, ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]], -3.0776),
    ("Pm-3m", 4.1437, ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]], -2.2722),
    ("Fd-3m", 5.43, ["Si"], [[0, 0, 0]], 0.0320),
]
MEAN, STD = -1.65459073, 1.07266128


def _record(sg, a, species, coords):
    s = Structure.from_spacegroup(sg, Lattice.cubic(a), species, coords)
    return Record(id="".join(species), formula=s.composition.reduced_formula, value=1.0, cif=s.to(fmt="cif"))


def _energies(bb, module):
    module.eval()
    batch = bb.collate([bb.featurise(_record(*ref[:4])) for ref in REFERENCE])
    with torch.no_grad():
        return (module.energy(batch) * STD + MEAN).tolist()


def test_published_weights_reproduce_the_dgl_reference(data_dir):
    bb = MEGNetBackbone()
    module = bb.build()
    info = bb.load_weights(module, "eform", data_dir)
    assert info["tensors_loaded"] == info["tensors_total"] == len(module.megnet.state_dict())
    for got, ref in zip(_energies(bb, module), REFERENCE):
        assert got == pytest.approx(ref[-1], abs=2e-3)
    batch = bb.collate([bb.featurise(_record(*REFERENCE[0][:4]))])
    assert module(batch).shape == (1, 16)


def test_source_aggregation_would_be_wrong(data_dir):
    """matgl 4's own convention (source nodes) misses the reference: the test above can fail."""
    from matgl.layers._graph_convolution import MEGNetGraphConv

    bb = MEGNetBackbone()
    module = bb.build()
    bb.load_weights(module, "eform", data_dir)
    for block in module.megnet.blocks:
        c = block.conv
        block.conv = MEGNetGraphConv(c.edge_func, c.node_func, c.state_func)
    got = _energies(bb, module)
    assert max(abs(g - r[-1]) for g, r in zip(got, REFERENCE)) > 0.3


def test_unknown_source_and_missing_weights_are_clear(data_dir, tmp_path):
    bb = MEGNetBackbone()
    with pytest.raises(UserError, match="no published weights 'nope'"):
        bb.load_weights(bb.build(), "nope", data_dir)
    with pytest.raises(UserError, match="state.pt"):
        bb.load_weights(bb.build(), "eform", tmp_path)


def test_element_outside_the_embedding_is_a_record_error():
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(6.0), ["Po", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rec = Record(id="mp-po", formula="PoO", value=1.0, cif=s.to(fmt="cif"), source="userfile")
    with pytest.raises(RecordError, match="mp-po.*Po not in MEGNet"):
        MEGNetBackbone().featurise(rec)
