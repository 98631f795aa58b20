"""The decoded backbone: the stem and one cell per layer along the genotype's path [P §5.2; TF
nas_network.py `_build_nas_base`]."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.genotype import Genotype
from autodeeplab.models.cell import DecodedCell
from autodeeplab.ops import Stem

#: The decoded network's levels: output strides 4, 8, 16 and 32 (the head's ASPP takes no other).
LEVELS = 4


class Backbone(nn.Module):
    """``(N, 3, H, W)`` -> ``(features, low_level)``.

    * ``features`` ``(N, B * F * 2**path[-1], H / os, W / os)`` with ``os = 4 * 2**path[-1]``
      (sizes rounded up at each stride-2 step), after a ReLU [TF: ``net = tf.nn.relu(net)``];
    * ``low_level`` ``(N, low_level_channels, ~H / 4, ~W / 4)``: the output of the last cell at
      level 0 (TF's decoder end point ``Cell_2`` for the paper's path), or the stem output when no
      cell sits at level 0.

    Layer ``i`` has ``f = F * 2**path[i]`` block channels. Cell 0 reads the stem's stride-2 feature
    as ``prev_prev``, cell 1 the stem output; later cells the output of the cell two back [TF].
    """

    def __init__(
        self,
        genotype: Genotype,
        filter_multiplier: int,
        *,
        stem_channels: tuple[int, int, int] = (64, 64, 128),
        drop_path_keep_prob: float = 1.0,
    ):
        super().__init__()
        genotype.check_levels(LEVELS)
        self.path = tuple(genotype.path)
        self.stem = Stem(tuple(stem_channels))
        self.cells = nn.ModuleList()
        channels = [self.stem.half_channels, self.stem.out_channels]
        previous = 0  # the stem sits at level 0 ("layer 0")
        layers = len(self.path)
        for layer, level in enumerate(self.path):
            cell = DecodedCell(
                genotype.cell,
                channels[-2],
                channels[-1],
                filter_multiplier * 2**level,
                downsample=level > previous,
                upsample=level < previous,
                drop_path_keep_prob=drop_path_keep_prob,
                layer_ratio=(layer + 1) / layers,  # [TF] (cell_num + 1) / total_num_cells
            )
            self.cells.append(cell)
            channels.append(cell.out_channels)
            previous = level
        self.out_channels = channels[-1]
        at_level0 = [layer for layer, level in enumerate(self.path) if level == 0]
        #: Index of the cell giving the low-level feature; -1 means the stem.
        self.low_level_cell = at_level0[-1] if at_level0 else -1
        self.low_level_channels = channels[self.low_level_cell + 2]

    @property
    def output_stride(self) -> int:
        return 4 * 2 ** self.path[-1]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prev_prev, prev = self.stem(x)
        low_level = prev
        for layer, cell in enumerate(self.cells):
            prev_prev, prev = prev, cell(prev_prev, prev)
            if layer == self.low_level_cell:
                low_level = prev
        return F.relu(prev), low_level
