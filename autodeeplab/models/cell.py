"""The decoded cell [P §3.1, §5.2; TF nas_cell.py `NASBaseCell`].

A cell of layer ``l`` reads ``prev`` (H^{l-1}) and ``prev_prev`` (H^{l-2}); block ``i`` sums the
outputs of its two edges, each an op of :data:`autodeeplab.ops.OPS` applied to exactly the input the
genotype names; the cell output is the channel concatenation of the B block outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autodeeplab.genotype import Edge
from autodeeplab.models.drop_path import DropPath
from autodeeplab.ops import OPS, ReLUConvBN, resize
from autodeeplab.space.edges import block_inputs

#: Inputs a cell receives from outside (the rest are its own blocks).
CELL_INPUTS = ("prev_prev", "prev")


def double_size(size: Sequence[int]) -> tuple[int, int]:
    """Spatial size after going one level finer: ``(n - 1) * 2 + 1`` [TF `scale_dimension`].

    It inverts :func:`autodeeplab.ops.half_size` on odd sizes (11 -> 21 -> 41 -> 81).
    """
    return ((size[0] - 1) * 2 + 1, (size[1] - 1) * 2 + 1)


class DecodedCell(nn.Module):
    """``forward(prev_prev, prev)`` -> ``(N, B * channels, H', W')``.

    * ``prev`` ``(N, c_prev, H, W)``: with ``upsample`` first resized to ``(2H - 1, 2W - 1)``
      (going to a finer level), then ReLU-1x1-BN to ``channels`` (always) [TF `_cell_base`];
    * ``prev_prev`` ``(N, c_prev_prev, h, w)``: resized to ``prev``'s (pre-stride) size, then
      ReLU-1x1-BN to ``channels`` when ``c_prev_prev != channels`` [TF];
    * with ``downsample`` (going to a coarser level) the ops reading ``prev``/``prev_prev`` run at
      stride 2, ops reading earlier blocks at stride 1 [TF `_apply_conv_operation`], so
      ``H' = ceil(H / 2)``; otherwise ``H' = H``.

    ``genotype_cell`` is :attr:`autodeeplab.genotype.Genotype.cell`: per block, its ``Edge(op,
    input)`` pairs. ``edge_inputs[b][e]`` is the index, into ``[prev_prev, prev, block1, ...]``,
    of the tensor that ``ops[b][e]`` reads.
    """

    def __init__(
        self,
        genotype_cell: Sequence[Sequence[Edge]],
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        *,
        downsample: bool = False,
        upsample: bool = False,
        drop_path_keep_prob: float = 1.0,
        layer_ratio: float = 1.0,
    ):
        super().__init__()
        if downsample and upsample:
            raise ValueError("a cell goes to a coarser or to a finer level, not both")
        self.channels = channels
        self.blocks = len(genotype_cell)
        self.out_channels = self.blocks * channels
        self.downsample, self.upsample = downsample, upsample
        self.preprocess_prev_prev = (
            ReLUConvBN(c_prev_prev, channels) if c_prev_prev != channels else nn.Identity()
        )
        self.preprocess_prev = ReLUConvBN(c_prev, channels)
        self.ops = nn.ModuleList()
        edge_inputs: list[tuple[int, ...]] = []
        droppable: list[tuple[bool, ...]] = []
        for b, block in enumerate(genotype_cell, start=1):
            names = block_inputs(b)
            self.ops.append(
                nn.ModuleList(
                    OPS[e.op](channels, 2 if downsample and e.input in CELL_INPUTS else 1, True)
                    for e in block
                )
            )
            edge_inputs.append(tuple(names.index(e.input) for e in block))
            # [TF] drop path on every op output except the identity (TF's 'none' op).
            droppable.append(tuple(e.op != "skip_connect" for e in block))
        self.edge_inputs = tuple(edge_inputs)
        self.droppable = tuple(droppable)
        self.drop_path = DropPath(drop_path_keep_prob, layer_ratio)

    def forward(self, prev_prev: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            prev = resize(prev, double_size(prev.shape[-2:]))
        prev_prev = self.preprocess_prev_prev(resize(prev_prev, tuple(prev.shape[-2:])))
        states = [prev_prev, self.preprocess_prev(prev)]
        for ops, inputs, droppable in zip(self.ops, self.edge_inputs, self.droppable):
            total: torch.Tensor | None = None
            for op, index, drop in zip(ops, inputs, droppable):
                out = op(states[index])
                out = self.drop_path(out) if drop else out
                total = out if total is None else total + out
            states.append(total)
        return torch.cat(states[len(CELL_INPUTS) :], dim=1)

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, blocks={self.blocks}, "
            f"downsample={self.downsample}, upsample={self.upsample}"
        )
