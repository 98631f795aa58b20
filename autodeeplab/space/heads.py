"""The search heads: one ASPP per level at the last layer [P §4.1].

Three branches (1x1; 3x3 with dilation ``96 / output stride``, i.e. 24, 12, 6, 3; image pooling),
concatenated and projected to the classes. The pooling branch has no BatchNorm so it works at
batch size 1 (BN over a single 1x1 value per channel is undefined in training).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


class SearchASPP(nn.Module):
    """``(N, c_in, H, W)`` -> logits ``(N, num_classes, H, W)``."""

    def __init__(self, c_in: int, num_classes: int, dilation: int, channels: int = 64):
        super().__init__()
        self.dilation = dilation
        self.conv1x1 = _conv_bn_relu(c_in, channels, 1)
        self.atrous = _conv_bn_relu(c_in, channels, 3, dilation)
        self.pool_conv = nn.Conv2d(c_in, channels, 1)
        self.project = nn.Conv2d(3 * channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))
        branches = [self.conv1x1(x), self.atrous(x), pooled.expand(-1, -1, *x.shape[-2:])]
        return self.project(torch.cat(branches, dim=1))
