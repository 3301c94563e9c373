"""Built-in MEGNet backbone (matgl 4, PyTorch Geometric), with matgl's published weights.

The published weights were trained with edge messages averaged onto each edge's *destination*
node (the DGL convention); matgl 4's PyG ``MEGNetGraphConv`` averages onto the *source* node.
This backbone uses destination aggregation for every strategy, so that scratch and pretrained
runs share one architecture and the published weights reproduce their reference predictions.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from paraisite_bench import hookimpl
from paraisite_bench.backbone import Backbone
from paraisite_bench.errors import RecordError, UserError

from . import fast

#: Published-weights folders under ``<data root>/models``.
SOURCES = {
    "eform": ("MEGNet-MP-2018.6.1-Eform",
              "MEGNet formation energy, 62,315 Materials Project compounds (MP 2018.6.1)"),
}
#: The multi-fidelity band gap model has another architecture (learned 16-d state embedding of the
#: fidelity index, 3 set2set iterations, 5 Å cutoff): it is the backbone ``megnet_bandgap``.
BANDGAP_SOURCES = {
    "bandgap": ("MEGNet-MP-2019.4.1-BandGap-mfi",
                "MEGNet multi-fidelity band gap, MP 2019.4.1 (state = fidelity 0: PBE)"),
}

#: The architecture of MEGNet-MP-2018.6.1-Eform (its model.json ``init_args``).
ARCH = dict(dim_node_embedding=16, dim_edge_embedding=100, dim_state_embedding=2, nblocks=3,
            hidden_layer_sizes_input=(64, 32), hidden_layer_sizes_conv=(64, 64, 32),
            hidden_layer_sizes_output=(32, 16), nlayers_set2set=1, niters_set2set=2,
            activation_type="softplus2", include_state=True, cutoff=4.0, gauss_width=0.5)

#: The architecture of MEGNet-MP-2019.4.1-BandGap-mfi (its model.json ``init_args``).
BANDGAP_ARCH = dict(ARCH, dim_state_embedding=16, ntypes_state=4, niters_set2set=3, cutoff=5.0)
#: Fidelity index given as the band gap model's state (0 PBE, 1 GLLB-SC, 2 HSE, 3 SCAN). PBE: the
#: fidelity with by far the most training data (MP), and the one our DFT κ datasets' structures share.
BANDGAP_FIDELITY = 0


@functools.lru_cache(maxsize=None)
def destination_conv_class() -> type:
    """matgl's ``MEGNetGraphConv`` averaging edge messages onto destination nodes (one class per
    process, so that compiled code guarded on module types serves every model)."""
    from matgl.layers._graph_convolution import MEGNetGraphConv
    from torch_geometric.utils import scatter

    class DestinationMEGNetGraphConv(MEGNetGraphConv):
        aggregation = "destination"

        def node_update_(self, edge_index, edge_feat, node_feat, u_per_node, num_nodes):
            ve = scatter(edge_feat, edge_index[1], dim=0, dim_size=num_nodes, reduce="mean")
            return self.node_func(torch.hstack([node_feat, ve, u_per_node]))

    return DestinationMEGNetGraphConv


def destination_conv(conv):
    """Return a copy of a matgl ``MEGNetGraphConv`` that averages edge messages onto destination nodes."""
    return destination_conv_class()(conv.edge_func, conv.node_func, conv.state_func)


class MEGNetRepresentation(nn.Module):
    """MEGNet up to its last hidden layer (16-d): readout → output MLP without its final Linear.

    A :class:`GraphBatch` (from :meth:`MEGNetBackbone.batcher`, the fast loop) goes through
    :mod:`.fast`, the same function in fewer operations (compiled after
    :meth:`MEGNetBackbone.accelerate`); a PyG batch (``collate``, the plain loop) through matgl's modules."""

    def __init__(self, arch: dict):
        super().__init__()
        from matgl.models import MEGNet

        self.megnet = MEGNet(**arch)
        for block in self.megnet.blocks:
            block.conv = destination_conv(block.conv)
        self.fast = fast.supported(self.megnet)
        self.compiled = False  # set by MEGNetBackbone.accelerate

    def _fast(self, batch: "GraphBatch", drop_last: int) -> torch.Tensor:
        fn = fast.forward
        # compiled for training steps only: validation (no grad) and single-graph batches (sizes of 1 are
        # specialised by dynamo) stay eager rather than compiling more graphs
        if self.compiled and torch.is_grad_enabled() and batch.num_graphs > 1:
            fn = fast.compiled()
        meg = self.megnet
        return fn(meg, fast.lstm_weights(meg.node_s2s), fast.lstm_weights(meg.edge_s2s), batch.node_type,
                  batch.pos, batch.edge_index, batch.pbc_offshift, batch.state_attr, batch.batch,
                  batch.num_graphs, drop_last)

    def forward(self, batch) -> torch.Tensor:
        if self.fast and isinstance(batch, GraphBatch):
            return self._fast(batch, drop_last=1)
        self.megnet(batch, state_attr=batch.state_attr)
        vec = self.megnet.feature_dict["readout"]
        for layer in self.megnet.output_proj.layers[:-1]:
            vec = layer(vec)
        return vec

    def energy(self, batch) -> torch.Tensor:
        """The full MEGNet output (for checking published weights)."""
        if self.fast and isinstance(batch, GraphBatch):
            return self._fast(batch, drop_last=0).reshape(-1)
        return self.megnet(batch, state_attr=batch.state_attr).reshape(-1)


class GraphBatch:
    """The attributes of a PyG ``Batch`` that MEGNet reads (``node_type``, ``pos``, ``edge_index``,
    ``pbc_offshift``, ``state_attr``, ``batch``, ``num_graphs``), as plain tensors."""

    __slots__ = ("node_type", "pos", "edge_index", "pbc_offshift", "state_attr", "batch", "num_graphs")

    def __init__(self, **tensors):
        for k, v in tensors.items():
            setattr(self, k, v)

    def to(self, device):
        return GraphBatch(**{k: (getattr(self, k).to(device) if k != "num_graphs" else self.num_graphs)
                             for k in self.__slots__})


class GraphBatcher:
    """Graphs of a fixed list concatenated once; a batch of indices is built by slicing with node and
    edge offsets (what ``Batch.from_data_list`` computes, minus its per-step object overhead)."""

    def __init__(self, features: Sequence[Any]):
        feats = list(features)
        n_nodes = np.array([int(d.num_nodes) for d in feats], dtype=np.int64)
        n_edges = np.array([int(d.edge_index.shape[1]) for d in feats], dtype=np.int64)
        self.n_nodes, self.n_edges = n_nodes, n_edges
        self.node_start = np.concatenate([[0], np.cumsum(n_nodes)[:-1]])
        self.edge_start = np.concatenate([[0], np.cumsum(n_edges)[:-1]])
        self.node_type = torch.cat([d.node_type for d in feats])
        self.pos = torch.cat([d.pos for d in feats])
        self.pbc_offshift = torch.cat([d.pbc_offshift for d in feats])
        self.edge_index = torch.cat([d.edge_index for d in feats], dim=1)  # graph-local node numbers
        self.state_attr = torch.cat([d.state_attr for d in feats])

    @staticmethod
    def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Concatenation of arange(s, s + c) for each (s, c)."""
        total = int(counts.sum())
        shift = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return np.arange(total) + shift

    def __call__(self, indices: Sequence[int]) -> GraphBatch:
        idx = np.asarray(indices, dtype=np.int64)
        nn_, ne = self.n_nodes[idx], self.n_edges[idx]
        node_ids = torch.from_numpy(self._ranges(self.node_start[idx], nn_))
        edge_ids = torch.from_numpy(self._ranges(self.edge_start[idx], ne))
        # graph-local node numbers + the first node of each graph in the batch
        new_start = np.concatenate([[0], np.cumsum(nn_)[:-1]])
        edge_shift = torch.from_numpy(np.repeat(new_start, ne))
        return GraphBatch(
            node_type=self.node_type[node_ids],
            pos=self.pos[node_ids],
            pbc_offshift=self.pbc_offshift[edge_ids],
            edge_index=self.edge_index[:, edge_ids] + edge_shift,
            state_attr=self.state_attr[torch.from_numpy(idx)],
            batch=torch.from_numpy(np.repeat(np.arange(len(idx)), nn_)),
            num_graphs=len(idx),
        )


class MEGNetBackbone(Backbone):
    name = "megnet"
    input_kind = "structure"
    representation_dim = 16
    description = "MEGNet graph network (matgl 4 PyG, destination-node aggregation)"
    weight_sources = {k: v[1] for k, v in SOURCES.items()}
    default_weights = "eform"
    arch: dict = ARCH
    sources: dict = SOURCES

    def __init__(self):
        from matgl.config import DEFAULT_ELEMENTS

        self.element_types = tuple(DEFAULT_ELEMENTS)
        self.cutoff = self.arch["cutoff"]
        self._converter = None

    def settings(self) -> dict[str, Any]:
        return {"cutoff": self.cutoff, "n_elements": len(self.element_types), "graph": "pyg-v1"}

    def state_attr(self, default_state) -> torch.Tensor:
        """The graph's state input: matgl's default (two zeros) for the formation-energy model."""
        return torch.as_tensor(default_state, dtype=torch.float32).reshape(1, -1)

    def resolve_source(self, source: str) -> str:
        source = super().resolve_source(source)
        if source not in self.sources:
            raise UserError(f"{self.name} has no published weights {source!r}: known sources are "
                            f"{', '.join(self.sources)}")
        return source

    def featurise(self, record):
        from torch_geometric.data import Data

        structure = record.structure
        unknown = sorted({sp.symbol for sp in structure.composition} - set(self.element_types))
        if unknown:
            raise RecordError(record.source, record.id, f"element(s) {', '.join(unknown)} not in MEGNet's "
                              "89-element embedding", "remove this record or use another backbone")
        if self._converter is None:
            from matgl.ext.pymatgen import Structure2Graph

            self._converter = Structure2Graph(element_types=self.element_types, cutoff=self.cutoff)
        g, lat, state = self._converter.get_graph(structure)
        if g.edge_index.shape[1] == 0:
            raise RecordError(record.source, record.id, f"no neighbours within {self.cutoff} Å",
                              "check the lattice (cell too large or atoms too far apart)")
        lattice = lat[0]
        return Data(
            node_type=g.node_type, pos=g.frac_coords @ lattice, edge_index=g.edge_index.long(),
            pbc_offshift=g.pbc_offset @ lattice, num_nodes=g.num_nodes,
            state_attr=self.state_attr(state),
        )

    def collate(self, features: Sequence[Any]):
        from torch_geometric.data import Batch

        return Batch.from_data_list(list(features))

    def batcher(self, features: Sequence[Any]):
        """Index-based batching over pre-concatenated graph tensors: the same batch as
        :meth:`collate` (same tensors, same order), without building PyG objects per step."""
        return GraphBatcher(features)

    def build(self) -> nn.Module:
        return MEGNetRepresentation(self.arch)

    def accelerate(self, module: nn.Module, sample) -> str | None:
        """Compile the fast forward (and backward) for this stage's training steps, on CPU: one
        ``torch.compile`` graph with dynamic shapes, compiled on ``sample`` here (so that a failure,
        e.g. no C++ compiler, leaves the stage eager instead of failing it) and reused by every later
        model in this process."""
        if not (isinstance(module, MEGNetRepresentation) and module.fast and isinstance(sample, GraphBatch)
                and sample.pos.device.type == "cpu" and sample.num_graphs > 1):
            return None
        t0 = time.perf_counter()
        module.compiled = True
        try:
            module(sample).sum().backward()
        except Exception as exc:  # noqa: BLE001 - any compiler failure: train eagerly
            module.compiled = False
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            print(f"paraisite-bench: torch.compile failed ({type(exc).__name__}: {first}); training "
                  "without it (the same function, slower). "
                  "Set PARAISITE_BENCH_COMPILE=off to skip the attempt.",
                  file=sys.stderr)
            return None
        finally:
            for p in module.parameters():
                p.grad = None
        return (f"torch.compile (inductor, dynamic shapes; {time.perf_counter() - t0:.1f} s "
                "on its first batch)")

    def load_weights(self, module: nn.Module, source: str, data_dir: Path) -> dict[str, Any]:
        if source not in self.sources:
            raise UserError(f"{self.name} has no published weights {source!r}: known sources are "
                            f"{', '.join(self.sources)}")
        folder = Path(data_dir) / "models" / self.sources[source][0]
        state_file = folder / "state.pt"
        if not state_file.exists():
            raise UserError(f"published weights {state_file} are missing: the data root must hold "
                            f"models/{self.sources[source][0]}/state.pt")
        init_args = json.loads((folder / "model.json").read_text())["kwargs"]["model"]["init_args"]
        for key, value in self.arch.items():
            if (init_args.get(key) is not None
                    and init_args[key] != (list(value) if isinstance(value, tuple) else value)):
                raise UserError(f"{folder}/model.json: {key}={init_args[key]} differs from this "
                                f"backbone's {value}")
        raw = torch.load(state_file, map_location="cpu", weights_only=True)
        state = {k.removeprefix("model."): v for k, v in raw.items()}
        target = module.megnet.state_dict()
        missing = sorted(set(target) - set(state))
        unexpected = sorted(set(state) - set(target))
        if missing or unexpected:
            raise UserError(f"{state_file}: weights do not match MEGNet ({len(missing)} missing, e.g. "
                            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        module.megnet.load_state_dict(state, strict=True)
        return {"source": source, "path": str(folder.name), "tensors_loaded": len(state),
                "tensors_total": len(target)}


class MEGNetBandGapBackbone(MEGNetBackbone):
    """MEGNet with the architecture of the multi-fidelity band gap model; its state input is the
    fidelity index (always 0 = PBE here). Its 16-d representation is the same layer as ``megnet``'s."""

    name = "megnet_bandgap"
    description = ("MEGNet with the multi-fidelity band gap architecture (state = fidelity index 0, PBE; "
                   "5 Å cutoff)")
    weight_sources = {k: v[1] for k, v in BANDGAP_SOURCES.items()}
    default_weights = "bandgap"
    arch = BANDGAP_ARCH
    sources = BANDGAP_SOURCES

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "state": f"fidelity:{BANDGAP_FIDELITY}"}

    def state_attr(self, default_state) -> torch.Tensor:
        return torch.tensor([BANDGAP_FIDELITY], dtype=torch.long)


@hookimpl
def register_backbones(register):
    register(MEGNetBackbone)
    register(MEGNetBandGapBackbone)
