"""The DeepLabv3+ head of the decoded model [P §5.2; TF deeplab model.py]: ASPP on the backbone
output and a decoder that refines it with the stride-4 low-level feature."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.ops import resize

#: ASPP atrous rates at output stride 16 [DeepLabv3]; they scale as ``16 / output_stride``.
BASE_RATES = (6, 12, 18)


def aspp_rates(output_stride: int) -> tuple[int, ...]:
    """Atrous rates for an output stride: (24, 48, 72) at 4, (12, 24, 36) at 8, (6, 12, 18) at 16,
    (3, 6, 9) at 32 -- the same field of view in image pixels."""
    if output_stride not in (4, 8, 16, 32):
        raise ValueError(f"output stride must be 4, 8, 16 or 32, got {output_stride}")
    return tuple(r * 16 // output_stride for r in BASE_RATES)


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    """conv (no bias) -> BN -> ReLU, the unit of TF's DeepLab arg scope."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(
                c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False
            ),
            bn=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(),
        )
    )


class ASPP(nn.Module):
    """``(N, c_in, h, w)`` -> ``(N, channels, h, w)``.

    Branches: 1x1; three dense (not separable) 3x3 atrous convs at ``rates``; image pooling. Each
    gives ``channels`` maps; their concatenation is projected by 1x1 conv + BN + ReLU [TF].
    The pooling branch is a biased 1x1 conv + ReLU without BN: BN over one pooled value per
    channel is undefined at batch size 1 in training (and degenerate at batch 2), while TF's
    version normalises it; this costs ``channels`` parameters fewer than TF's BN.
    """

    def __init__(self, c_in: int, rates: tuple[int, ...], channels: int = 256):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [conv_bn_relu(c_in, channels, 1)]
            + [conv_bn_relu(c_in, channels, 3, dilation=r) for r in self.rates]
        )
        self.pool_conv = nn.Conv2d(c_in, channels, 1)
        self.project = conv_bn_relu((len(self.rates) + 2) * channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.pool_conv(x.mean(dim=(2, 3), keepdim=True)))
        features = [branch(x) for branch in self.branches]
        features.append(pooled.expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(features, dim=1))


class DeepLabHead(nn.Module):
    """``forward(features, low_level)`` -> logits ``(N, num_classes, H4, W4)`` at the size of
    ``low_level`` (stride 4).

    ``features`` ``(N, c_in, h, w)`` goes through :class:`ASPP`; ``low_level``
    ``(N, c_low, H4, W4)`` is projected to ``low_level_channels`` (1x1 + BN + ReLU); the ASPP
    output is upsampled to ``(H4, W4)``, concatenated, refined by two 3x3 convs of
    ``decoder_channels`` (BN + ReLU, dense as the paper's parameter counts imply) and classified
    by a biased 1x1 conv [TF `refine_by_decoder`, `get_branch_logits`].
    """

    def __init__(
        self,
        c_in: int,
        c_low: int,
        num_classes: int,
        *,
        output_stride: int,
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
    ):
        super().__init__()
        self.aspp = ASPP(c_in, aspp_rates(output_stride), aspp_channels)
        self.low_level = conv_bn_relu(c_low, low_level_channels, 1)
        self.decoder = nn.Sequential(
            conv_bn_relu(aspp_channels + low_level_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: torch.Tensor, low_level: torch.Tensor) -> torch.Tensor:
        low_level = self.low_level(low_level)
        x = resize(self.aspp(features), tuple(low_level.shape[-2:]))
        return self.classifier(self.decoder(torch.cat([x, low_level], dim=1)))
