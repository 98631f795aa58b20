"""The operation table of the search space [P §4.1], shared by the supernet and decoded models.

Every op maps ``(N, C, H, W)`` to ``(N, C, H', W')`` with ``H' = ceil(H / stride)``. The factories
in :data:`OPS` take ``(channels, stride, affine)``; the supernet uses ``affine=False`` (the usual
DARTS choice), decoded models ``affine=True``. The supernet computes these ops in fused form
(``autodeeplab.space.mixed``) and a test checks it against the modules built here, so the two cannot
drift apart.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import nn

#: The op names in alpha's column order.
PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "atrous_conv_3x3",
    "atrous_conv_5x5",
)


def half_size(size: tuple[int, int]) -> tuple[int, int]:
    """Spatial size after a stride-2 step: ``ceil(n / 2)`` (TF "SAME": 321 -> 161 -> 81)."""
    return ((size[0] + 1) // 2, (size[1] + 1) // 2)


def level_size(size: tuple[int, int], level: int) -> tuple[int, int]:
    """The map size at ``level`` (stride ``4 * 2**level``: the stem's two halvings, then one
    per level) of an input of ``size``."""
    for _ in range(2 + level):
        size = half_size(size)
    return size


def check_coarsest_map(crop_size: int, batch_size: int, level: int, batch_key: str) -> None:
    """Refuse training batches whose ``crop_size`` crops shrink to one pixel at ``level``
    (stride ``4 * 2**level``: the stem's two halvings, then one per level) with a batch of
    one: BatchNorm in training needs more than one value per channel. ``batch_key`` names the
    batch size's setting in the message."""
    size = level_size((crop_size, crop_size), level)
    if batch_size * size[0] * size[1] < 2:
        raise ValueError(
            f"data.crop_size={crop_size} leaves a {size[0]}x{size[1]} map at level {level}, and "
            f"with {batch_key}=1 BatchNorm sees one value per channel: use data.crop_size >= "
            f"{4 * 2**level + 1} or {batch_key} >= 2"
        )


def check_training_input(model: str, shape: torch.Size, level: int) -> None:
    """Refuse, for a training-mode forward of ``model``, an input of ``shape`` ``(N, C, H, W)``
    whose maps shrink to one pixel at ``level`` with one image: BatchNorm in training needs
    more than one value per channel (PyTorch's own error names neither the input nor a
    remedy). The Python API's counterpart of :func:`check_coarsest_map`."""
    size = level_size((int(shape[-2]), int(shape[-1])), level)
    if int(shape[0]) * size[0] * size[1] < 2:
        raise ValueError(
            f"{model} in training mode: an input of shape {tuple(shape)} leaves a "
            f"{size[0]}x{size[1]} map at level {level}, where BatchNorm sees one value per "
            f"channel; pass at least 2 images, inputs of at least {4 * 2**level + 1} pixels a "
            "side, or call .eval() first"
        )


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` to ``size`` with corner alignment (as TF's builder)."""
    # Skipping a same-size resize is a Python branch on the input size; a trace or an export
    # would freeze it, so there it always interpolates (the identity at the same size).
    tracing = torch.jit.is_tracing() or torch.compiler.is_exporting()
    if not tracing and tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class Zero(nn.Module):
    """The ``none`` op: zeros of the output size (never computed by the supernet)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """``skip_connect`` at stride 2: two offset 1x1 stride-2 convs, concatenated, then BN."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of channels, got {c_out}")
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        a = self.conv_a(x)
        # The shifted branch sees the odd pixels; pad so both branches have ceil(n / 2) rows.
        b = self.conv_b(F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1)))
        return self.bn(torch.cat([a, b], dim=1))


def _sep_unit(channels: int, kernel: int, stride: int, affine: bool) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            relu=nn.ReLU(),
            depthwise=nn.Conv2d(
                channels, channels, kernel, stride, kernel // 2, groups=channels, bias=False
            ),
            pointwise=nn.Conv2d(channels, channels, 1, bias=False),
            bn=nn.BatchNorm2d(channels, affine=affine),
        )
    )


class SepConv(nn.Sequential):
    """Two stacked ReLU -> depthwise kxk -> pointwise 1x1 -> BN units; stride in the first only."""

    def __init__(self, channels: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__(
            _sep_unit(channels, kernel, stride, affine), _sep_unit(channels, kernel, 1, affine)
        )


class AtrousConv(nn.Module):
    """ReLU -> dense kxk conv with dilation 2 -> BN.

    At stride 2 the input is first resized by 0.5 and the conv runs at rate 1, as TF's builder
    does for atrous ops in a cell that goes to a coarser level.
    """

    def __init__(self, channels: int, kernel: int, stride: int = 1, affine: bool = True):
        super().__init__()
        self.stride = stride
        dilation = 2 if stride == 1 else 1
        padding = dilation * (kernel - 1) // 2
        self.conv = nn.Conv2d(
            channels, channels, kernel, padding=padding, dilation=dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(channels, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.stride == 2:
            x = resize(x, half_size(x.shape[-2:]))
        return self.bn(self.conv(x))


def _skip(channels: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(channels, channels, affine)


OpFactory = Callable[[int, int, bool], nn.Module]

#: name -> factory ``(channels, stride, affine) -> nn.Module``; read-only.
OPS: MappingProxyType[str, OpFactory] = MappingProxyType(
    {
        "none": lambda c, stride, affine: Zero(stride),
        "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride, 1),
        "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(
            3, stride, 1, count_include_pad=False
        ),
        "skip_connect": _skip,
        "sep_conv_3x3": lambda c, stride, affine: SepConv(c, 3, stride, affine),
        "sep_conv_5x5": lambda c, stride, affine: SepConv(c, 5, stride, affine),
        "atrous_conv_3x3": lambda c, stride, affine: AtrousConv(c, 3, stride, affine),
        "atrous_conv_5x5": lambda c, stride, affine: AtrousConv(c, 5, stride, affine),
    }
)


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BN; the resampling and projection unit of cells [P §4.1]."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int = 1, stride: int = 1, affine: bool = True
    ):
        super().__init__(
            OrderedDict(
                relu=nn.ReLU(),
                conv=nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                bn=nn.BatchNorm2d(c_out, affine=affine),
            )
        )


class Stem(nn.Module):
    """Image -> stride 4 [TF]: conv3x3(3->c0, s2)+BN+ReLU, conv3x3(c0->c1)+BN+ReLU,
    conv3x3(c1->c2, s2)+BN. ``forward`` returns ``(half, quarter)``: the stride-2 ``c1`` feature
    (``prev_prev`` of a decoded network's first cell) and the stride-4 ``c2`` output."""

    def __init__(self, channels: tuple[int, int, int] = (64, 64, 128), in_channels: int = 3):
        super().__init__()
        c0, c1, c2 = channels
        self.out_channels = c2
        self.half_channels = c1
        self.conv0 = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU()
        )
        self.conv1 = nn.Sequential(nn.Conv2d(c0, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1))
        self.conv2 = nn.Sequential(nn.Conv2d(c1, c2, 3, 2, 1, bias=False), nn.BatchNorm2d(c2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.conv1(self.conv0(x))
        return half, self.conv2(F.relu(half))
