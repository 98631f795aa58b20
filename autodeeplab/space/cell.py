"""The search cell [P §3.1, eq. 1-2]: B blocks over ``prev``, ``prev_prev`` and earlier blocks.

One cell (one weight set) serves every incoming path of its node: the paths' ``prev`` inputs are
stacked on channels and run together; ``prev_prev`` is the same for every path, so its edges are
computed once and broadcast.
"""

from __future__ import annotations

import torch
from torch import nn

from autodeeplab.space.edges import cell_inputs, consumers
from autodeeplab.space.mixed import InputEdges


class SearchCell(nn.Module):
    """``forward(prev, prev_prev, alpha_weights)``:

    * ``prev`` ``(N, P*C, H, W)``: the P paths' resampled ``H^{l-1}``, stacked on channels;
    * ``prev_prev`` ``(N, C, H, W)`` or ``None`` where the node has no ``H^{l-2}``;
    * ``alpha_weights`` ``(edges, ops)``: softmax of alpha, rows in ``cell_edges`` order.

    Returns the block outputs per path, ``(N, P, B, C, H, W)``.
    """

    def __init__(self, channels: int, blocks: int, paths: int, has_prev_prev: bool):
        super().__init__()
        self.channels, self.blocks, self.paths = channels, blocks, paths
        self.has_prev_prev = has_prev_prev
        self.readers = nn.ModuleDict()
        self._targets: dict[str, list[int]] = {}
        for name in cell_inputs(blocks):
            if name == "prev_prev" and not has_prev_prev:
                continue
            edges = consumers(name, blocks)
            self.readers[name] = InputEdges(
                channels, len(edges), 1 if name == "prev_prev" else paths
            )
            self._targets[name] = [block for block, _ in edges]
            self.register_buffer(
                f"rows_{name}", torch.tensor([row for _, row in edges]), persistent=False
            )

    def forward(
        self, prev: torch.Tensor, prev_prev: torch.Tensor | None, alpha_weights: torch.Tensor
    ) -> torch.Tensor:
        if (prev_prev is not None) != self.has_prev_prev:
            raise ValueError(
                f"this cell {'needs' if self.has_prev_prev else 'has no'} a prev_prev input"
            )
        n, _, h, w = prev.shape
        pending: list[torch.Tensor | None] = [None] * self.blocks

        def read(name: str, x: torch.Tensor) -> None:
            out = self.readers[name](x, alpha_weights[getattr(self, f"rows_{name}")])
            for k, block in enumerate(self._targets[name]):
                term = out[:, :, k]
                current = pending[block - 1]
                pending[block - 1] = term if current is None else current + term

        read("prev", prev)
        if prev_prev is not None:
            read("prev_prev", prev_prev)
        outputs = []
        for block in range(1, self.blocks + 1):
            state = pending[block - 1]  # (N, P, C, H, W): eq. 1, the sum over incoming edges
            outputs.append(state)
            if block < self.blocks:
                read(f"block{block}", state.reshape(n, self.paths * self.channels, h, w))
        return torch.stack(outputs, dim=2)
