"""An M3GNet backbone for paraisite-bench, shipped as a separate package (the worked example of
docs/writing-a-backbone-plugin.md).

It uses only the public contract of paraisite-bench (``hookimpl``, ``Backbone``, ``RecordError``,
``UserError``) and brings its own weight loader for matgl's ``M3GNet-MP-2018.6.1-Eform``.

Published weights. The checkpoint was written by an older matgl: its keys carry a ``model.``
prefix, the Set2Set LSTM lives at ``readout.set2set.lstm.*`` (now ``readout.lstm.*``), and
matgl 4 adds two buffers (``bond_expansion.rbf.cutoff``, ``basis_expansion.sbf.cutoff``) that keep
their initial value, the 5.0 Å cutoff of the model. matgl 4's PyG ``M3GNetGraphConv`` sums the
node-update messages onto each edge's *source* atom; the weights were trained with the DGL
convention, messages summed onto the *destination* atom. Loaded into the stock layer the model
predicts NaCl −1.86, MgO −2.48, CsCl −1.76 eV/atom (Materials Project ≈ −2.10, −3.05, −2.21);
with destination aggregation (this backbone, for every strategy) it predicts −2.10, −3.04, −2.22.
The three-body interaction needs no change. The test suite checks these reference predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from paraisite_bench import hookimpl
from paraisite_bench.backbone import Backbone
from paraisite_bench.errors import RecordError, UserError

#: Published-weights folders under ``<data root>/models``.
SOURCES = {
    "eform": ("M3GNet-MP-2018.6.1-Eform",
              "M3GNet formation energy, 62,315 Materials Project compounds (MP 2018.6.1)"),
}

#: The architecture of M3GNet-MP-2018.6.1-Eform (its model.json ``init_args``, element list aside).
ARCH = dict(dim_node_embedding=64, dim_edge_embedding=64, units=64, max_n=3, max_l=3, nblocks=3,
            rbf_type="SphericalBessel", is_intensive=True, readout_type="set2set", niters_set2set=3,
            nlayers_set2set=3, cutoff=5.0, threebody_cutoff=5.0, use_smooth=False, use_phi=False,
            activation_type="swish", include_state=False, field="node_feat", ntargets=1)

#: Old checkpoint key → matgl 4 key (after the ``model.`` prefix is stripped).
RENAMES = (("readout.set2set.lstm.", "readout.lstm."),)
#: Buffers that matgl 4 added; they are not in the checkpoint and keep their initial value.
NEW_BUFFERS = ("bond_expansion.rbf.cutoff", "basis_expansion.sbf.cutoff")


def destination_conv(conv):
    """A copy of a matgl ``M3GNetGraphConv`` that sums node-update messages onto destination atoms."""
    from matgl.layers._graph_convolution import M3GNetGraphConv
    from torch_geometric.utils import scatter

    class DestinationM3GNetGraphConv(M3GNetGraphConv):
        def node_update_(self, edge_index, edge_feat, node_feat, rbf, u_per_edge, num_nodes):
            src, dst = edge_index[0], edge_index[1]
            parts = [node_feat[src], node_feat[dst], edge_feat]
            if self.include_state:
                parts.append(u_per_edge)
            mess = self.node_update_func(torch.hstack(parts)) * self.node_weight_func(rbf)
            return scatter(mess, dst.long(), dim=0, dim_size=num_nodes, reduce="sum")

    return DestinationM3GNetGraphConv(conv.include_state, conv.edge_update_func, conv.edge_weight_func,
                                      conv.node_update_func, conv.node_weight_func, conv.state_update_func)


class M3GNetRepresentation(nn.Module):
    """M3GNet up to its last hidden layer (64-d): Set2Set readout → final MLP without its last Linear."""

    def __init__(self, element_types: tuple[str, ...]):
        super().__init__()
        from matgl.models import M3GNet

        self.m3gnet = M3GNet(element_types=element_types, **ARCH)
        for block in self.m3gnet.graph_layers:
            block.conv = destination_conv(block.conv)

    def forward(self, batch) -> torch.Tensor:
        self.m3gnet(batch)
        vec = self.m3gnet.feature_dict["readout"]
        for layer in self.m3gnet.final_layer.layers[:-1]:
            vec = layer(vec)
        return vec

    def energy(self, batch) -> torch.Tensor:
        """The model's raw (normalised) output, for checking published weights."""
        return self.m3gnet(batch).reshape(-1)


class M3GNetBackbone(Backbone):
    name = "m3gnet"
    input_kind = "structure"
    representation_dim = 64
    description = "M3GNet graph network with three-body interactions (matgl 4 PyG, destination aggregation)"
    weight_sources = {k: v[1] for k, v in SOURCES.items()}
    default_weights = "eform"

    def __init__(self):
        from matgl.config import DEFAULT_ELEMENTS

        self.element_types = tuple(DEFAULT_ELEMENTS)
        self.cutoff = ARCH["cutoff"]
        self._converter = None

    def settings(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "n_elements": len(self.element_types), "graph": "pyg-v1"}

    def featurise(self, record):
        from torch_geometric.data import Data

        structure = record.structure
        unknown = sorted({sp.symbol for sp in structure.composition} - set(self.element_types))
        if unknown:
            raise RecordError(record.source, record.id, f"element(s) {', '.join(unknown)} not in M3GNet's "
                              f"{len(self.element_types)}-element embedding",
                              "remove this record or use another backbone")
        if self._converter is None:
            from matgl.ext.pymatgen import Structure2Graph

            self._converter = Structure2Graph(element_types=self.element_types, cutoff=self.cutoff)
        g, lat, _state = self._converter.get_graph(structure)
        if g.edge_index.shape[1] == 0:
            raise RecordError(record.source, record.id, f"no neighbours within {self.cutoff} Å",
                              "check the lattice (cell too large or atoms too far apart)")
        lattice = lat[0]
        return Data(node_type=g.node_type, pos=g.frac_coords @ lattice, edge_index=g.edge_index.long(),
                    pbc_offshift=g.pbc_offset @ lattice, num_nodes=g.num_nodes)

    def collate(self, features: Sequence[Any]):
        from torch_geometric.data import Batch

        return Batch.from_data_list(list(features))

    def build(self) -> nn.Module:
        return M3GNetRepresentation(self.element_types)

    def load_weights(self, module: nn.Module, source: str, data_dir: Path) -> dict[str, Any]:
        if source not in SOURCES:
            raise UserError(f"m3gnet has no published weights {source!r}: known sources are "
                            f"{', '.join(SOURCES)}")
        folder = Path(data_dir) / "models" / SOURCES[source][0]
        state_file = folder / "state.pt"
        if not state_file.exists():
            raise UserError(f"published weights {state_file} are missing: the data root must hold "
                            f"models/{SOURCES[source][0]}/state.pt")
        try:
            init_args = json.loads((folder / "model.json").read_text())["kwargs"]["model"]["init_args"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserError(f"{folder}/model.json cannot be read ({type(exc).__name__}): "
                            "it must be matgl's model.json of M3GNet-MP-2018.6.1-Eform") from None
        for key, value in ARCH.items():
            if key in init_args and init_args[key] is not None and init_args[key] != value:
                raise UserError(f"{folder}/model.json: {key}={init_args[key]} differs from this "
                                f"backbone's {value}")
        if tuple(init_args.get("element_types") or self.element_types) != self.element_types:
            raise UserError(f"{folder}/model.json: its element list differs from matgl's DEFAULT_ELEMENTS")
        raw = torch.load(state_file, map_location="cpu", weights_only=True)
        state = {}
        for key, value in raw.items():
            key = key.removeprefix("model.")
            for old, new in RENAMES:
                if key.startswith(old):
                    key = new + key[len(old):]
            state[key] = value
        target = module.m3gnet.state_dict()
        missing = sorted(set(target) - set(state) - set(NEW_BUFFERS))
        unexpected = sorted(set(state) - set(target))
        if missing or unexpected:
            raise UserError(f"{state_file}: weights do not match M3GNet ({len(missing)} missing, e.g. "
                            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        for name in NEW_BUFFERS:
            state[name] = target[name]  # the model's cutoff (5.0 Å), as matgl 4 initialises it
        module.m3gnet.load_state_dict(state, strict=True)
        return {"source": source, "path": folder.name, "tensors_loaded": len(raw),
                "tensors_total": len(target)}


@hookimpl
def register_backbones(register):
    register(M3GNetBackbone)
