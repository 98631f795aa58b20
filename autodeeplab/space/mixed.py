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
* kernel taps that can only read zero padding (on maps smaller than the kernel's reach, common
  at the coarse levels: on a 2x2 map a dilated 5x5 reads only its centre) are dropped, so both
  atrous convs run as one call there, a matmul at 2x2;
* pools and ``skip_connect`` have no weights, so they are computed once per input and shared by
  all edges; ``none`` is never computed, only its softmax mass counts.

``tests/space`` checks outputs and gradients against the op modules of ``autodeeplab.ops``.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.ops import PRIMITIVES

_I = {name: i for i, name in enumerate(PRIMITIVES)}
_SEP_COLUMNS = [_I["sep_conv_3x3"], _I["sep_conv_5x5"]]
_ATROUS_COLUMNS = [_I["atrous_conv_3x3"], _I["atrous_conv_5x5"]]
_FREE_COLUMNS = [_I["max_pool_3x3"], _I["avg_pool_3x3"], _I["skip_connect"]]


def _conv_init(weight: torch.Tensor) -> None:
    """``nn.Conv2d``'s default init, applied to each ``(out, in, k, k)`` slice of ``weight``."""
    for block in weight.view(-1, *weight.shape[-4:]):
        nn.init.kaiming_uniform_(block, a=math.sqrt(5))


#: Depthwise convs on maps with at least this many pixels run in ``channels_last``: measured on
#: a CPU, their backward is 2-3x faster there at 16x16 and larger, and no faster below.
CHANNELS_LAST_MIN_PIXELS = 64


def live_taps(kernel: int, dilation: int, size: int) -> slice:
    """The taps of a centred ``kernel`` (zero padding ``dilation * (kernel // 2)``) that can read
    a pixel of a map ``size`` pixels long: tap ``i`` reads offset ``(i - kernel // 2) * dilation``,
    which lies outside the map for every output pixel once its magnitude reaches ``size``. The
    other taps only ever multiply padding, so dropping them changes neither the output nor any
    gradient (theirs is exactly zero)."""
    half = kernel // 2
    reach = min(half, (size - 1) // dilation)
    return slice(half - reach, half + reach + 1)


def _fit(weight: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """The centred ``(kh, kw)`` window of a ``(..., k, k)`` kernel, per dimension cropped where
    it is smaller and zero-padded where it is larger."""
    k = weight.shape[-1]
    pad_h, pad_w = max(0, (kh - k) // 2), max(0, (kw - k) // 2)
    if pad_h or pad_w:
        weight = F.pad(weight, (pad_w, pad_w, pad_h, pad_h))
    top, left = (weight.shape[-2] - kh) // 2, (weight.shape[-1] - kw) // 2
    return weight[..., top : top + kh, left : left + kw]


#: Depthwise convs on maps with at most this many pixels run as a matmul with the conv's
#: (pixels x pixels) matrix: 1.4-2.5x faster than mkldnn, forward and backward, on a CPU.
MATRIX_DEPTHWISE_MAX_PIXELS = 16


@functools.lru_cache(maxsize=64)
def _tap_matrices(
    h: int, w: int, kh: int, kw: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """``(kh*kw, h*w*h*w)``: row ``t`` is the 0/1 matrix ``[out pixel, in pixel]`` of tap ``t``
    of a 'same'-padded ``kh`` x ``kw`` conv on an ``h`` x ``w`` map."""
    out = torch.zeros(kh, kw, h, w, h, w, dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            di, dj = i - kh // 2, j - kw // 2
            for y in range(max(0, -di), min(h, h - di)):
                for x in range(max(0, -dj), min(w, w - dj)):
                    out[i, j, y, x, y + di, x + dj] = 1
    return out.view(kh * kw, h * w * h * w).to(device)


def _depthwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise conv of ``(N, G, H, W)`` with ``(G, 1, kh, kw)`` (odd sizes, 'same' padding)."""
    n, g, h, w = x.shape
    kh, kw = weight.shape[-2:]
    if h * w <= MATRIX_DEPTHWISE_MAX_PIXELS:
        taps = _tap_matrices(h, w, kh, kw, x.dtype, x.device)
        matrix = (weight.view(g, kh * kw) @ taps).view(g, h * w, h * w)
        y = torch.bmm(matrix, x.view(n, g, h * w).permute(1, 2, 0))  # (G, out pixel, N)
        return y.permute(2, 0, 1).reshape(n, g, h, w)
    padding = (kh // 2, kw // 2)
    if h * w >= CHANNELS_LAST_MIN_PIXELS:
        x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, weight, padding=padding, groups=g).contiguous()
    return F.conv2d(x, weight, padding=padding, groups=g)


def _atrous(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Dense conv, dilation 2, 'same' padding, of ``(B, C, H, W)`` with ``(O, C, kh, kw)``; a
    1x1 kernel runs as a matmul (mkldnn is 5-10x slower on the tiny maps where that happens)."""
    kh, kw = weight.shape[-2:]
    if kh == kw == 1:
        b, c, h, w = x.shape
        return torch.matmul(weight.view(-1, c), x.view(b, c, h * w)).view(b, -1, h, w)
    return F.conv2d(x, weight, padding=(kh // 2 * 2, kw // 2 * 2), dilation=2)


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
        # Channel layouts (kernel, path, edge, channel): both separable convs, both atrous convs.
        self.sep_bn = nn.ModuleList(nn.BatchNorm2d(2 * stacked, affine=False) for _ in range(2))
        self.atrous_bn = nn.BatchNorm2d(2 * stacked, affine=False)

    def _repeat_paths(self, weight: torch.Tensor) -> torch.Tensor:
        """``(K, edges, *rest)`` -> ``(K * paths * edges * rest[0], *rest[1:])`` in (K, P, E)
        order: one copy of each edge's weights per path."""
        k = weight.shape[0]
        expanded = weight.unsqueeze(1).expand(k, self.paths, *weight.shape[1:])
        return expanded.reshape(-1, *weight.shape[3:])

    def _depthwise_weights(self, unit: int, h: int, w: int) -> torch.Tensor:
        """Unit ``unit``'s depthwise weights ``(2*P*E*C, 1, kh, kw)``: both kernels on the live
        taps of the 5x5 for an ``h`` x ``w`` map."""
        rows, cols = live_taps(5, 1, h), live_taps(5, 1, w)
        kh, kw = rows.stop - rows.start, cols.stop - cols.start
        depthwise = torch.stack(
            [_fit(self.sep3_depthwise[unit], kh, kw), self.sep5_depthwise[unit][..., rows, cols]]
        )
        return self._repeat_paths(depthwise)

    def _pointwise(self, unit: int, y: torch.Tensor) -> torch.Tensor:
        """Unit ``unit``'s pointwise convs of ``y`` ``(N, 2*P*E*C, H, W)``: one batched matmul.
        (On CPU a grouped 1x1 conv falls back to one call per group.)"""
        n, _, h, w = y.shape
        p, e, c = self.paths, self.edges, self.channels
        weight = torch.stack([self.sep3_pointwise[unit], self.sep5_pointwise[unit]])
        if c <= h * w:
            # (2*P*E, C, C) @ (N, 2*P*E, C, H*W), the weights repeated per path.
            weight = self._repeat_paths(weight).view(-1, c, c)
            return torch.matmul(weight, y.view(n, 2 * p * e, c, h * w)).view(n, -1, h, w)
        # Small maps: the weights outweigh the activations, so move the activations instead.
        y = y.view(n, 2, p, e, c, h * w).permute(1, 3, 4, 2, 0, 5).reshape(2 * e, c, -1)
        y = torch.bmm(weight.view(2 * e, c, c), y).view(2, e, c, p, n, h * w)
        return y.permute(4, 0, 3, 1, 2, 5).reshape(n, -1, h, w)

    def _atrous_pair(self, x: torch.Tensor) -> torch.Tensor:
        """Both dense atrous convs of ``x`` ``(B, C, H, W)`` -> ``(B, 2, E*C, H, W)``, on their
        live taps only: on maps of at most 4 pixels a side both kernels shrink to the same size
        and run as one call (a matmul at 2 pixels or fewer)."""
        h, w = x.shape[-2:]
        e, c = self.edges, self.channels
        rows3, cols3 = live_taps(3, 2, h), live_taps(3, 2, w)
        rows5, cols5 = live_taps(5, 2, h), live_taps(5, 2, w)
        w3 = self.atrous3[..., rows3, cols3].flatten(0, 1)
        w5 = self.atrous5[..., rows5, cols5].flatten(0, 1)
        if w3.shape == w5.shape:
            return _atrous(x, torch.cat([w3, w5])).view(x.shape[0], 2, e * c, h, w)
        return torch.stack([_atrous(x, w3), _atrous(x, w5)], dim=1)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p, e, c = self.paths, self.edges, self.channels
        r = F.relu(x)

        # Both separable convs, layout (kernel, path, edge, channel) on the channel axis.
        y = r.view(n, 1, p, 1, c, h, w).expand(n, 2, p, e, c, h, w).reshape(n, 2 * p * e * c, h, w)
        for unit in range(2):
            if unit:
                y = F.relu(y)
            y = _depthwise(y, self._depthwise_weights(unit, h, w))
            y = self.sep_bn[unit](self._pointwise(unit, y))
        sep = y.view(n, 2, p, e, c, h, w)

        # Dense atrous convs: paths go on the batch axis, so the big (E*C, C, k, k) weights are
        # used as they are (repeating them per path would dominate the step's memory); BN still
        # sees (kernel, path, edge, channel) on the channel axis.
        paths_on_batch = r.view(n, p, c, h, w).transpose(0, 1).reshape(p * n, c, h, w)
        atrous = self._atrous_pair(paths_on_batch).view(p, n, 2, e * c, h, w)
        atrous = atrous.permute(1, 2, 0, 3, 4, 5).reshape(n, 2 * p * e * c, h, w)
        atrous = self.atrous_bn(atrous).view(n, 2, p, e, c, h, w)

        # Weight-free ops: once per input, shared by every edge.
        free = torch.stack(
            [
                F.max_pool2d(x, 3, 1, 1),
                F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
                x,
            ],
            dim=1,
        ).view(n, 3, p, 1, c, h, w)

        weights = weights.to(sep.dtype)  # float32 alpha under autocast

        def column(cols: list[int]) -> torch.Tensor:
            # (edges, k) -> (1, k, 1, edges, 1, 1, 1) to broadcast against (N, k, P, E, C, H, W)
            return weights[:, cols].t().reshape(1, -1, 1, e, 1, 1, 1)

        out = (sep * column(_SEP_COLUMNS)).sum(1)
        out = out + (atrous * column(_ATROUS_COLUMNS)).sum(1)
        return out + (free * column(_FREE_COLUMNS)).sum(1)

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
