"""The search cell [P §3.1, eq. 1-2]: B blocks over ``prev``, ``prev_prev`` and earlier blocks.

One cell (one weight set) serves every incoming path of its node: the paths' ``prev`` inputs are
stacked on channels and run together; ``prev_prev`` is the same for every path, so its edges are
computed once and broadcast. The ``prev`` and ``prev_prev`` edges run as one mixed-op call (each
input with its own weights), so a cell of B blocks makes B calls.

With ``partial_channels = K > 1`` the cell makes partial channel connections [PC-DARTS §3.2]:
each edge runs its mixed op on the first ``C / K`` channels of its input only, passes the other
channels through unweighted, and shuffles the result with :func:`channel_shuffle` (``K`` groups).
That changes the algorithm (a different supernet, not an approximation of eq. 6); it cuts the
mixed ops' activations ``K``-fold and their pointwise and dense atrous convs (FLOPs and weights)
``K**2``-fold. PC-DARTS's edge normalisation is not part of it.
"""

from __future__ import annotations

import torch
from torch import nn

from autodeeplab.space.edges import cell_inputs, consumers
from autodeeplab.space.mixed import InputEdges, mixed_ops


def channel_shuffle(x: torch.Tensor, groups: int, dim: int = 1) -> torch.Tensor:
    """Channel ``g * (C / groups) + j`` of ``x`` (along ``dim``) moves to ``j * groups + g``
    [PC-DARTS; ShuffleNet]."""
    c = x.shape[dim]
    split = x.unflatten(dim, (groups, c // groups))
    return split.transpose(dim, dim + 1).flatten(dim, dim + 1)


class SearchCell(nn.Module):
    """``forward(prev, prev_prev, alpha_weights)``:

    * ``prev`` ``(N, P*C, H, W)``: the P paths' resampled ``H^{l-1}``, stacked on channels;
    * ``prev_prev`` ``(N, C, H, W)`` or ``None`` where the node has no ``H^{l-2}``;
    * ``alpha_weights`` ``(edges, ops)``: softmax of alpha, rows in ``cell_edges`` order.

    Returns the block outputs per path, ``(N, P, B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        blocks: int,
        paths: int,
        has_prev_prev: bool,
        partial_channels: int = 1,
        *,
        join_prev_prev: bool = True,
    ):
        super().__init__()
        if partial_channels < 1 or channels % partial_channels:
            raise ValueError(
                f"partial_channels={partial_channels}: expected a positive divisor of the "
                f"cell's {channels} channels"
            )
        self.channels, self.blocks, self.paths = channels, blocks, paths
        self.has_prev_prev = has_prev_prev
        self.partial_channels = partial_channels
        #: Channels of each input that go through the mixed ops (all of them when K = 1).
        self.mixed_channels = channels // partial_channels
        self.readers = nn.ModuleDict()
        self._targets: dict[str, list[int]] = {}
        for name in cell_inputs(blocks):
            if name == "prev_prev" and not has_prev_prev:
                continue
            edges = consumers(name, blocks)
            self.readers[name] = InputEdges(
                self.mixed_channels, len(edges), 1 if name == "prev_prev" else paths
            )
            self._targets[name] = [block for block, _ in edges]
        #: The mixed-op calls in order, each as the inputs it reads: ``prev`` and ``prev_prev``
        #: as one call where ``join_prev_prev`` (one call's fixed cost less per node: see
        #: :func:`~autodeeplab.space.mixed.mixed_ops`), then the blocks' outputs but the last.
        first = ["prev", "prev_prev"] if has_prev_prev else ["prev"]
        self.calls = [first] if join_prev_prev else [[name] for name in first]
        self.calls += [[f"block{block}"] for block in range(1, blocks)]
        # alpha's rows of the edges in call order: one gather per cell, then a view per call.
        rows = [row for call in self.calls for name in call for _, row in consumers(name, blocks)]
        self._call_rows = [sum(len(self._targets[name]) for name in call) for call in self.calls]
        self.register_buffer("edge_rows", torch.tensor(rows), persistent=False)

    def forward(
        self, prev: torch.Tensor, prev_prev: torch.Tensor | None, alpha_weights: torch.Tensor
    ) -> torch.Tensor:
        if (prev_prev is not None) != self.has_prev_prev:
            raise ValueError(
                f"this cell {'needs' if self.has_prev_prev else 'has no'} a prev_prev input"
            )
        # The mixed ops and the partial-channel split view their inputs as (N, paths, C, H, W).
        prev = prev.contiguous()
        prev_prev = None if prev_prev is None else prev_prev.contiguous()
        n, _, h, w = prev.shape
        c, m = self.channels, self.mixed_channels
        # Per block, the sum of its incoming edges: the mixed ops' outputs and, with partial
        # channels, the passed-through channels (the same for every edge reading an input).
        pending: list[torch.Tensor | None] = [None] * self.blocks
        bypass: list[torch.Tensor | None] = [None] * self.blocks
        by_call = alpha_weights.index_select(0, self.edge_rows).split(self._call_rows)

        def add(terms: list[torch.Tensor | None], block: int, term: torch.Tensor) -> None:
            current = terms[block - 1]
            terms[block - 1] = term if current is None else current + term

        def read(names: list[str], xs: list[torch.Tensor], weights: torch.Tensor) -> None:
            rests = []
            if m < c:
                for i, x in enumerate(xs):
                    split = x.view(n, -1, c, h, w)
                    rests.append(split[:, :, m:])
                    xs[i] = split[:, :, :m].reshape(n, -1, h, w)
            readers = [self.readers[name] for name in names]
            out = mixed_ops(readers, xs, weights)
            parts = out.split([reader.paths for reader in readers], 1) if len(names) > 1 else [out]
            for i, (name, part) in enumerate(zip(names, parts, strict=True)):
                # One unbind, not an index per edge: its backward stacks the edges' gradients,
                # where each index's backward would write a zero-filled copy of the output.
                for block, edge_out in zip(self._targets[name], part.unbind(2), strict=True):
                    add(pending, block, edge_out)
                    if m < c:
                        add(bypass, block, rests[i])

        # ``prev`` first: every block reads it, so each block's sums hold all P paths before the
        # single-path ``prev_prev`` terms broadcast onto them.
        inputs = {"prev": prev, "prev_prev": prev_prev}
        first_calls = len(self.calls) - (self.blocks - 1)
        for call, weights in zip(self.calls[:first_calls], by_call, strict=False):
            read(call, [inputs[name] for name in call], weights)
        outputs = []
        for block in range(1, self.blocks + 1):
            state = pending[block - 1]  # (N, P, C, H, W): eq. 1, the sum over incoming edges
            if m < c:
                state = channel_shuffle(torch.cat([state, bypass[block - 1]], 2), c // m, 2)
            outputs.append(state)
            if block < self.blocks:
                x = state.reshape(n, self.paths * c, h, w)
                read([f"block{block}"], [x], by_call[first_calls + block - 1])
        return torch.stack(outputs, dim=2)
