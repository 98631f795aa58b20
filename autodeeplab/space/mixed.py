"""Mixed ops of the supernet, computed per cell input for every edge and path at once.

A plain implementation of a search cell runs one small module per (path, edge, op): tens of
thousands of tiny calls per step, so the search is bound by per-call overhead. Here every edge
that reads the same input (e.g. the five edges from ``prev``) and every incoming path of the node
go through one grouped convolution per op stage:

* the ``P`` incoming paths are stacked on channels, ``(N, P*C, H, W)``; a grouped conv with
  weights repeated over ``P`` shares the cell's weights across paths [P §4.1] while BatchNorm,
  being per channel, keeps statistics per path and per edge, exactly as a separate run of each
  path and edge would;
* ``sep_conv_3x3`` and ``sep_conv_5x5`` run as one depthwise 5x5 (the 3x3 kernel zero-padded);
* pools and ``skip_connect`` have no weights, so they are computed once per input and shared by
  all edges; ``none`` is never computed, only its softmax mass counts.

``tests/space`` checks outputs and gradients against the op modules of ``autodeeplab.ops``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.ops import PRIMITIVES

_I = {name: i for i, name in enumerate(PRIMITIVES)}
_SEP_COLUMNS = [_I["sep_conv_3x3"], _I["sep_conv_5x5"]]
_FREE_COLUMNS = [_I["max_pool_3x3"], _I["avg_pool_3x3"], _I["skip_connect"]]


def _conv_init(weight: torch.Tensor) -> None:
    """``nn.Conv2d``'s default init, applied to each ``(out, in, k, k)`` slice of ``weight``."""
    for block in weight.view(-1, *weight.shape[-4:]):
        nn.init.kaiming_uniform_(block, a=math.sqrt(5))


#: Depthwise convs on maps with at least this many pixels run in ``channels_last``: measured on
#: a CPU, their backward is 2-3x faster there at 16x16 and larger, and no faster below.
CHANNELS_LAST_MIN_PIXELS = 64


def _depthwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise 5x5 conv ``(N, G, H, W)`` with weight ``(G, 1, 5, 5)``."""
    if x.shape[-1] * x.shape[-2] >= CHANNELS_LAST_MIN_PIXELS:
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, padding=2, groups=x.shape[1]).contiguous()
    return F.conv2d(x, weight, padding=2, groups=x.shape[1])


class InputEdges(nn.Module):
    """The mixed ops of the ``edges`` edges that read one cell input, for ``paths`` paths.

    ``forward(x, weights)``: ``x`` ``(N, paths*C, H, W)``, ``weights`` the softmax op weights of
    these edges ``(edges, len(PRIMITIVES))`` -> ``(N, paths, edges, C, H, W)``, where
    ``out[:, p, e] = sum_k weights[e, k] * op_k(x_p)`` with op_k from ``autodeeplab.ops.OPS``
    (non-affine BN, stride 1) and edge ``e``'s own weights.
    """

    def __init__(self, channels: int, edges: int, paths: int):
        super().__init__()
        self.channels, self.edges, self.paths = channels, edges, paths
        c, e = channels, edges
        # Leading axis: the two units of a separable conv; then edge, out-channel.
        self.sep3_depthwise = nn.Parameter(torch.empty(2, e, c, 1, 3, 3))
        self.sep3_pointwise = nn.Parameter(torch.empty(2, e, c, c, 1, 1))
        self.sep5_depthwise = nn.Parameter(torch.empty(2, e, c, 1, 5, 5))
        self.sep5_pointwise = nn.Parameter(torch.empty(2, e, c, c, 1, 1))
        self.atrous3 = nn.Parameter(torch.empty(e, c, c, 3, 3))
        self.atrous5 = nn.Parameter(torch.empty(e, c, c, 5, 5))
        for weight in self.parameters():
            _conv_init(weight.data)
        stacked = paths * edges * channels
        self.sep_bn = nn.ModuleList(nn.BatchNorm2d(2 * stacked, affine=False) for _ in range(2))
        self.atrous_bn = nn.ModuleList(nn.BatchNorm2d(stacked, affine=False) for _ in range(2))

    def _repeat_paths(self, weight: torch.Tensor) -> torch.Tensor:
        """``(K, edges, *rest)`` -> ``(K * paths * edges * rest[0], *rest[1:])`` in (K, P, E)
        order: one copy of each edge's weights per path."""
        k = weight.shape[0]
        expanded = weight.unsqueeze(1).expand(k, self.paths, *weight.shape[1:])
        return expanded.reshape(-1, *weight.shape[3:])

    def _separable_weights(self, unit: int) -> tuple[torch.Tensor, torch.Tensor]:
        depthwise = torch.stack(
            [F.pad(self.sep3_depthwise[unit], (1, 1, 1, 1)), self.sep5_depthwise[unit]]
        )
        pointwise = torch.stack([self.sep3_pointwise[unit], self.sep5_pointwise[unit]])
        pointwise = self._repeat_paths(pointwise).view(-1, self.channels, self.channels)
        return self._repeat_paths(depthwise), pointwise

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p, e, c = self.paths, self.edges, self.channels
        r = F.relu(x)

        # Both separable convs, layout (kernel, path, edge, channel) on the channel axis.
        y = r.view(n, 1, p, 1, c, h, w).expand(n, 2, p, e, c, h, w).reshape(n, 2 * p * e * c, h, w)
        for unit in range(2):
            depthwise, pointwise = self._separable_weights(unit)
            if unit:
                y = F.relu(y)
            y = _depthwise(y, depthwise)
            # The grouped 1x1 conv as one batched matmul: (G, C, C) @ (N, G, C, H*W). On CPU a
            # grouped 1x1 conv falls back to one call per group.
            y = torch.matmul(pointwise, y.view(n, 2 * p * e, c, h * w)).view(n, -1, h, w)
            y = self.sep_bn[unit](y)
        sep = y.view(n, 2, p, e, c, h, w)

        # Dense atrous convs: paths go on the batch axis, so the big (E*C, C, k, k) weights are
        # used as they are (repeating them per path would dominate the step's memory); BN still
        # sees (path, edge, channel) on the channel axis.
        paths_on_batch = r.view(n, p, c, h, w).transpose(0, 1).reshape(p * n, c, h, w)
        atrous = []
        for k, (weight, bn) in enumerate(zip((self.atrous3, self.atrous5), self.atrous_bn)):
            y = F.conv2d(
                paths_on_batch,
                weight.view(e * c, c, 3 + 2 * k, 3 + 2 * k),
                padding=2 + 2 * k,
                dilation=2,
            )
            y = y.view(p, n, e * c, h, w).transpose(0, 1).reshape(n, p * e * c, h, w)
            atrous.append(bn(y).view(n, p, e, c, h, w))
        atrous3, atrous5 = atrous

        # Weight-free ops: once per input, shared by every edge.
        free = torch.stack(
            [
                F.max_pool2d(x, 3, 1, 1),
                F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                x,
            ],
            dim=1,
        ).view(n, 3, p, 1, c, h, w)

        def column(cols: list[int] | int) -> torch.Tensor:
            # (edges, k) -> (1, k, 1, edges, 1, 1, 1) to broadcast against (N, k, P, E, C, H, W)
            return weights[:, cols].t().reshape(1, -1, 1, e, 1, 1, 1)

        out = (sep * column(_SEP_COLUMNS)).sum(1)
        out = out + (free * column(_FREE_COLUMNS)).sum(1)
        out = out + atrous3 * column(_I["atrous_conv_3x3"])[:, 0]
        return out + atrous5 * column(_I["atrous_conv_5x5"])[:, 0]

    def op_parameters(self, edge: int, op: str) -> dict[str, torch.Tensor]:
        """The weights of ``op`` on edge ``edge``, named as in ``OPS[op](C, 1, False)`` (views,
        so gradients flow back here); for ``torch.func.functional_call`` or weight copying."""
        if op in ("sep_conv_3x3", "sep_conv_5x5"):
            k = op[-1]
            dw, pw = getattr(self, f"sep{k}_depthwise"), getattr(self, f"sep{k}_pointwise")
            return {
                f"{unit}.{name}.weight": tensor[unit, edge]
                for unit in range(2)
                for name, tensor in (("depthwise", dw), ("pointwise", pw))
            }
        if op in ("atrous_conv_3x3", "atrous_conv_5x5"):
            return {"conv.weight": getattr(self, f"atrous{op[-1]}")[edge]}
        if op not in PRIMITIVES:
            raise ValueError(f"unknown op {op!r}; expected one of {PRIMITIVES}")
        return {}
