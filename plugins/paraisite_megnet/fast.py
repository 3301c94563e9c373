"""A faster implementation of the same MEGNet function (matgl 4 PyG MEGNet with destination-node
aggregation), on the same parameters: used for batches from :class:`GraphBatcher` (the fast training
loop); PyG batches (the plain loop, the reference) go through matgl's own modules.

Same function, fewer and cheaper operations:

- the first layer of each edge-update MLP, ``W·[v_src, v_dst, e, u] + b``, is split by input:
  the node and state parts are multiplied once per *node* and per *graph* and gathered per edge
  (a batch of 8 AFLOW structures has ~84 nodes and ~1,220 edges), instead of concatenating
  a 128-wide input per edge;
- scatter means divide by degrees counted once per batch, not once per layer;
- Set2Set's one-layer LSTM is written as its cell (4 small matmuls on ``num_graphs`` rows; the
  fused RNN kernel costs ~100 µs a call on such tiny inputs) and its segment softmax with the same
  max-shift as PyG's;
- ``softplus(x) - log 2`` subtracts in place.

Outputs and gradients equal matgl's to float rounding (tests check 1e-5). With
:func:`compiled` the whole forward (and its backward) is one ``torch.compile`` graph (dynamic shapes,
CPU: C++ kernels that fuse the elementwise work next to the matmuls).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LOG2 = math.log(2.0)


def ssp(x: Tensor) -> Tensor:
    """MEGNet's SoftPlus2, ``softplus(x) - log 2`` (softplus' backward needs its input, not its output,
    so subtracting in place is safe under autograd)."""
    return F.softplus(x).sub_(LOG2)


def _linears(mlp: nn.Module) -> list[tuple[nn.Linear, bool]]:
    """(Linear, followed by SoftPlus2?) for each Linear of a matgl ``MLP``."""
    layers = list(mlp.layers)
    return [(layer, i + 1 < len(layers) and not isinstance(layers[i + 1], nn.Linear))
            for i, layer in enumerate(layers) if isinstance(layer, nn.Linear)]


def _mlp(x: Tensor, mlp: nn.Module, skip_first: bool = False) -> Tensor:
    for i, (layer, act) in enumerate(_linears(mlp)):
        if skip_first and i == 0:
            continue
        x = F.linear(x, layer.weight, layer.bias)
        if act:
            x = ssp(x)
    return x


def _seg_sum(x: Tensor, index: Tensor, n: int) -> Tensor:
    return x.new_zeros((n,) + tuple(x.shape[1:])).index_add_(0, index, x)


def _set2set(x: Tensor, index: Tensor, n: int, lstm: tuple[Tensor, Tensor, Tensor, Tensor],
             iters: int) -> Tensor:
    """PyG's Set2Set (one LSTM layer) on segments ``index`` of ``x``: ``(n, 2 * dim)``."""
    w_ih, w_hh, b_ih, b_hh = lstm
    dim = x.shape[1]
    h = x.new_zeros(n, dim)
    c = x.new_zeros(n, dim)
    q_star = x.new_zeros(n, 2 * dim)
    for _ in range(iters):
        gates = F.linear(q_star, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
        i, f, g, o = gates.chunk(4, 1)  # PyTorch's LSTM gate order
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        e = (x * h.index_select(0, index)).sum(-1)
        # segment softmax, shifted by the (constant) segment max as torch_geometric.utils.softmax
        emax = x.new_full((n,), float("-inf")).scatter_reduce_(0, index, e.detach(), "amax")
        w = (e - emax.index_select(0, index)).exp()
        w = w / (_seg_sum(w, index, n) + 1e-16).index_select(0, index)
        q_star = torch.cat([h, _seg_sum(x * w.unsqueeze(1), index, n)], dim=-1)
    return q_star


def lstm_weights(set2set: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    lstm = set2set.lstm
    return lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0


def supported(megnet: nn.Module) -> bool:
    """Whether :func:`forward` computes this MEGNet's function: SoftPlus2 activations, residual blocks
    without dropout, destination-node aggregation, one-layer Set2Set LSTMs (this plugin's models)."""
    mlps = [megnet.edge_encoder, megnet.node_encoder, megnet.state_encoder, megnet.output_proj]
    for block in megnet.blocks:
        if not (block.skip and block.dropout is None
                and getattr(block.conv, "aggregation", None) == "destination"):
            return False
        mlps += [block.conv.edge_func, block.conv.node_func, block.conv.state_func]
        if block.has_dense:
            mlps += [block.edge_func, block.node_func, block.state_func]
    acts = {type(m).__name__ for mlp in mlps for m in mlp.layers if not isinstance(m, nn.Linear)}
    return (acts == {"SoftPlus2"} and megnet.dropout is None and not megnet.is_classification
            and megnet.node_s2s.lstm.num_layers == 1 and megnet.edge_s2s.lstm.num_layers == 1)


def forward(megnet: nn.Module, node_lstm, edge_lstm, node_type: Tensor, pos: Tensor, edge_index: Tensor,
            pbc_offshift: Tensor, state_attr: Tensor, batch: Tensor, num_graphs: int,
            drop_last: int = 1) -> Tensor:
    """MEGNet's readout through ``output_proj`` minus its last ``drop_last`` modules (1: the 16-d
    representation, i.e. without the final Linear; 0: the full MEGNet output, shape ``(graphs, 1)``).
    ``node_lstm``/``edge_lstm``: :func:`lstm_weights` of the two Set2Sets, passed as tensors (dynamo
    does not trace ``nn.LSTM`` modules)."""
    src, dst = edge_index[0], edge_index[1]
    n_nodes, n_graphs = pos.shape[0], num_graphs
    edge_batch = batch.index_select(0, src)
    bond = pos.index_select(0, dst) + pbc_offshift - pos.index_select(0, src)
    edge_attr = megnet.bond_expansion(torch.linalg.vector_norm(bond, dim=1))
    v, e, u = megnet.embedding(node_type, edge_attr, state_attr)
    e = _mlp(e, megnet.edge_encoder)
    v = _mlp(v, megnet.node_encoder)
    u = _mlp(u, megnet.state_encoder)
    u = u.reshape(n_graphs, -1)
    ones = torch.ones_like(src, dtype=e.dtype)
    inv_in_degree = (1.0 / _seg_sum(ones, dst, n_nodes).clamp_(min=1)).unsqueeze(1)
    inv_edges = (1.0 / _seg_sum(ones, edge_batch, n_graphs).clamp_(min=1)).unsqueeze(1)
    inv_nodes = (1.0 / _seg_sum(torch.ones_like(batch, dtype=e.dtype), batch, n_graphs)
                 .clamp_(min=1)).unsqueeze(1)
    for block in megnet.blocks:
        e0, v0, u0 = e, v, u
        if block.has_dense:
            e = _mlp(e, block.edge_func)
            v = _mlp(v, block.node_func)
            u = _mlp(u, block.state_func)
        conv = block.conv
        first = conv.edge_func.layers[0]
        w, k, ke = first.weight, v.shape[1], e.shape[1]
        # W·[v_src, v_dst, e, u] + b, with the node and state parts computed per node / per graph
        per_src = F.linear(v, w[:, :k]) + F.linear(u, w[:, 2 * k + ke:]).index_select(0, batch)
        per_dst = F.linear(v, w[:, k:2 * k])
        h = torch.addmm(first.bias, e, w[:, 2 * k:2 * k + ke].t())
        h = h + per_src.index_select(0, src) + per_dst.index_select(0, dst)
        e_new = _mlp(ssp(h), conv.edge_func, skip_first=True)
        v_mean = _seg_sum(e_new, dst, n_nodes) * inv_in_degree  # edge messages averaged onto destinations
        v_new = _mlp(torch.cat([v, v_mean, u.index_select(0, batch)], dim=1), conv.node_func)
        u_new = _mlp(torch.cat([u, _seg_sum(e_new, edge_batch, n_graphs) * inv_edges,
                                _seg_sum(v_new, batch, n_graphs) * inv_nodes], dim=1), conv.state_func)
        e, v, u = e_new + e0, v_new + v0, u_new + u0
    node_vec = _set2set(v, batch, n_graphs, node_lstm, megnet.node_s2s.processing_steps)
    edge_vec = _set2set(e, edge_batch, n_graphs, edge_lstm, megnet.edge_s2s.n_iters)
    x = torch.cat([node_vec, edge_vec, u], dim=-1)
    layers = list(megnet.output_proj.layers)
    for layer in layers[:len(layers) - drop_last]:
        x = F.linear(x, layer.weight, layer.bias) if isinstance(layer, nn.Linear) else ssp(x)
    return x


_COMPILED = None


def compiled():
    """:func:`forward` under ``torch.compile`` (one graph, dynamic shapes), created once per process
    and shared by every model: parameters are graph inputs, so a new model reuses the compiled code."""
    global _COMPILED
    if _COMPILED is None:
        _COMPILED = torch.compile(forward, dynamic=True, fullgraph=True)
    return _COMPILED
