"""A plain implementation of the supernet's eq. 6: the yardstick of the fused forward pass.

Every (path, edge, op) is a separate call of the op module from ``autodeeplab.ops`` (weights
taken as views of the supernet's fused parameters, so gradients land on the same tensors); each
path runs its cell on its own; nothing is batched or shared. It is what a straightforward port
computes, and as slow: the tests compare outputs and gradients with it and the benchmark times it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from autodeeplab.ops import OPS, PRIMITIVES, half_size, resize
from autodeeplab.space.cell import SearchCell, channel_shuffle
from autodeeplab.space.edges import block_inputs, consumers, edge_row
from autodeeplab.space.supernet import Supernet


def reference_cell(
    cell: SearchCell,
    prev: torch.Tensor,
    prev_prev: torch.Tensor | None,
    alpha_weights: torch.Tensor,
    templates: dict[str, nn.Module],
    path: int = 0,
) -> torch.Tensor:
    """Path ``path`` through ``cell``: block by block, edge by edge, op by op ->
    ``(N, B*C, H, W)``.

    With partial channels (K > 1) each edge runs its ops on its input's first ``C / K`` channels,
    appends the others and shuffles, as PC-DARTS's mixed op does. In eval mode (``templates``
    in eval mode) the ops normalise with the cell's running statistics of that path and edge;
    in training mode with the batch's, and the cell's statistics are left alone."""
    states = {"prev": prev, "prev_prev": prev_prev}
    groups = cell.partial_channels
    m = cell.channels // groups
    outputs = []
    for block in range(1, cell.blocks + 1):
        total = 0
        for name in block_inputs(block):
            if name == "prev_prev" and prev_prev is None:
                continue
            reader = cell.readers[name]
            slot = [b for b, _ in consumers(name, cell.blocks)].index(block)
            row = edge_row(block, name)
            x = states[name]
            edge = 0
            own_path = 0 if name == "prev_prev" else path  # prev_prev: one for all paths
            for k, op in enumerate(PRIMITIVES):
                if op == "none":
                    continue
                tensors = reader.op_parameters(slot, op)
                if not templates[op].training:
                    tensors |= reader.op_buffers(own_path, slot, op)
                out = functional_call(templates[op], tensors, (x[:, :m],))
                edge = edge + alpha_weights[row, k] * out
            if groups > 1:
                edge = channel_shuffle(torch.cat([edge, x[:, m:]], dim=1), groups)
            total = total + edge
        states[f"block{block}"] = total
        outputs.append(total)
    return torch.cat(outputs, dim=1)


def reference_forward(
    net: Supernet,
    x: torch.Tensor,
    alpha_weights: torch.Tensor | None = None,
    beta_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """``net``'s logits ``(N, K, H, W)`` computed path by path with the plain op modules, in
    ``net``'s mode, dtype and device (in training mode it updates the running statistics of
    the stem, the nodes' input projections and the heads, not those of the mixed ops)."""
    aw = net.alpha_weights() if alpha_weights is None else alpha_weights
    bw = net.beta_weights() if beta_weights is None else beta_weights
    _, stem = net.stem(x)
    sizes = [tuple(stem.shape[-2:])]
    for _ in range(1, net.lattice.levels):
        sizes.append(half_size(sizes[-1]))
    templates_by_width = {}
    states = {(0, 0): stem}
    for (l, s), node in zip(net.lattice.nodes, net.nodes):
        width = node.cell.mixed_channels
        templates = templates_by_width.setdefault(
            width,
            {
                op: OPS[op](width, 1, False).to(stem.device, stem.dtype).train(net.training)
                for op in PRIMITIVES
            },
        )
        pp = node.prev_prev(states[(l - 2, s)]) if node.prev_prev is not None else None
        total = 0
        for path, ((source, direction), resample) in enumerate(zip(node.incoming, node.resample)):
            h = states[(l - 1, source)]
            if source > s:
                h = resize(h, sizes[s])
            cell_out = reference_cell(node.cell, resample(h), pp, aw, templates, path)
            total = total + bw[l - 1, source, direction] * cell_out
        states[(l, s)] = total
    logits = 0
    for s, head in zip(net.head_levels, net.heads):
        logits = logits + resize(head(states[(net.lattice.layers, s)]), tuple(x.shape[-2:]))
    return logits
