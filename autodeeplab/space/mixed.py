"""Mixed ops of the supernet, computed per cell input for every edge and path at once.

A plain implementation of a search cell runs one small module per (path, edge, op): tens of
thousands of tiny calls per step, so the search is bound by per-call overhead. Here every edge
that reads the same input (e.g. the five edges from ``prev``) and every incoming path of the node
go through one grouped convolution per op stage, and :func:`mixed_ops` runs the edges of several
inputs (a cell's ``prev`` and ``prev_prev``) as one call, each input with its own weights:

* the ``P`` incoming paths are stacked on channels, ``(N, P*C, H, W)``; a grouped conv with
  weights repeated over ``P`` shares the cell's weights across paths [P §4.1] while BatchNorm,
  being per channel, keeps statistics per path and per edge, exactly as a separate run of each
  path and edge would;
* ``sep_conv_3x3`` and ``sep_conv_5x5`` run as one depthwise 5x5 (the 3x3 kernel zero-padded);
* kernel taps that can only read zero padding (on maps smaller than the kernel's reach, common
  at the coarse levels: on a 2x2 map a dilated 5x5 reads only its centre) are dropped;
* both atrous convs run as one call where their live windows agree (a matmul at 2x2) and
  wherever zero-padding the 3x3 to the 5x5's window adds little arithmetic
  (:func:`merge_atrous`), since a conv call's fixed cost dominates on small maps;
* pools and ``skip_connect`` have no weights, so they are computed once per input and shared by
  all edges; ``none`` is never computed, only its softmax mass counts;
* the backward pass is written by hand (``_MixedOps``): a fraction of the tensor ops that
  recording the forward would issue, a depthwise weight gradient 4-6x faster than the
  library's, and no weight gradients at all in the architecture step (weights frozen);
* the backward keeps five activation-sized tensors' worth per call (the pointwise convs'
  inputs, per reader on maps smaller than the channel count, and the BatchNorm outputs, from
  which :func:`_batch_norm_backward` works) and rebuilds the rest (fitted weights, pools,
  ``relu(x)``): at 128x128 a step's activations take 0.66 GiB instead of the 1.15 GiB that
  keeping every intermediate took.

``tests/space`` checks outputs, gradients and BatchNorm statistics against the op modules of
``autodeeplab.ops``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.ops import PRIMITIVES

_I = {name: i for i, name in enumerate(PRIMITIVES)}


def _conv_init(weight: torch.Tensor) -> None:
    """``nn.Conv2d``'s default init, applied to each ``(out, in, k, k)`` slice of ``weight``."""
    for block in weight.view(-1, *weight.shape[-4:]):
        nn.init.kaiming_uniform_(block, a=math.sqrt(5))


def live_taps(kernel: int, dilation: int, size: int) -> slice:
    """The taps of a centred ``kernel`` (zero padding ``dilation * (kernel // 2)``) that can read
    a pixel of a map ``size`` pixels long: tap ``i`` reads offset ``(i - kernel // 2) * dilation``,
    which lies outside the map for every output pixel once its magnitude reaches ``size``. The
    other taps only ever multiply padding, so dropping them changes neither the output nor any
    gradient (theirs is exactly zero)."""
    half = kernel // 2
    reach = min(half, (size - 1) // dilation)
    return slice(half - reach, half + reach + 1)


def _live_size(kernel: int, dilation: int, h: int, w: int) -> tuple[int, int]:
    """The size of the window of live taps (:func:`live_taps`) on an ``h`` x ``w`` map."""
    rows, cols = live_taps(kernel, dilation, h), live_taps(kernel, dilation, w)
    return rows.stop - rows.start, cols.stop - cols.start


def _fit(weight: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """The centred ``(kh, kw)`` window of a ``(..., h, w)`` kernel (odd sizes), per dimension
    cropped where it is smaller and zero-padded where it is larger, as a new contiguous tensor
    (``weight`` itself where the sizes agree). Fitting back to the original size is the
    adjoint: it maps a gradient of the window to the gradient of the kernel.

    Works on the flattened taps, a gather for the crop and a scatter into zeros for the pad: a
    strided crop or pad of 3x3 and 5x5 taps copies a few floats per call of the library's copy
    kernel, 3-6x slower at the supernet's weights.
    """
    h, w = weight.shape[-2:]
    if (h, w) == (kh, kw):
        return weight
    source, target = _fit_taps(h, w, kh, kw, weight.device)
    taps = weight.reshape(-1, h * w)
    if source is not None:
        taps = taps.index_select(1, source)
    if target is not None:
        taps = taps.new_zeros(taps.shape[0], kh * kw).index_copy_(1, target, taps)
    return taps.view(*weight.shape[:-2], kh, kw)


@functools.lru_cache(maxsize=64)
def _fit_taps(
    h: int, w: int, kh: int, kw: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """For :func:`_fit`: the flat indices of the taps both centred windows share, in the
    ``h`` x ``w`` kernel (``None`` where that is all of it) and in the ``kh`` x ``kw`` window
    (``None`` where that is all of it)."""
    top, left = (kh - h) // 2, (kw - w) // 2  # where the kernel's (0, 0) lands in the window
    source, target = [], []
    for y in range(h):
        for x in range(w):
            if 0 <= y + top < kh and 0 <= x + left < kw:
                source.append(y * w + x)
                target.append((y + top) * kw + x + left)
    return (
        None if len(source) == h * w else torch.tensor(source, device=device),
        None if len(target) == kh * kw else torch.tensor(target, device=device),
    )


#: Depthwise convs on maps with at most this many pixels run as a matmul with the conv's
#: (pixels x pixels) matrix: 1.5x faster than a conv call on a 2x2 map on a CPU, slower from 4x4.
MATRIX_DEPTHWISE_MAX_PIXELS = 4


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


# Each op stage below is a pair of pure functions: ``*_forward`` returns its output and what its
# backward needs; ``*_backward`` returns the gradients. ``_MixedOps`` chains them by hand, which
# issues a fraction of the tensor ops (and none of the autograd bookkeeping) that recording the
# forward would: at the supernet's small maps a step is bound by that per-op overhead.


def _depthwise_matrix(weight: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(G, out pixel, in pixel)``: the matrix of the depthwise conv with ``(G, 1, kh, kw)`` on
    an ``h`` x ``w`` map."""
    g, _, kh, kw = weight.shape
    taps = _tap_matrices(h, w, kh, kw, weight.dtype, weight.device)
    return (weight.view(g, kh * kw) @ taps).view(g, h * w, h * w)


def _depthwise_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Depthwise conv of ``(N, G, H, W)`` with ``(G, 1, kh, kw)`` (odd sizes, 'same' padding)."""
    n, g, h, w = x.shape
    kh, kw = weight.shape[-2:]
    if h * w <= MATRIX_DEPTHWISE_MAX_PIXELS:
        matrix = _depthwise_matrix(weight, h, w)
        y = torch.bmm(matrix, x.view(n, g, h * w).permute(1, 2, 0))  # (G, out pixel, N)
        return y.permute(2, 0, 1).reshape(n, g, h, w)
    return F.conv2d(x, weight, padding=(kh // 2, kw // 2), groups=g)


def _depthwise_backward(
    grad: torch.Tensor, x: torch.Tensor | None, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of :func:`_depthwise_forward` for its input and, given its input ``x`` (only
    the weight gradient needs it), its weight.

    The weight gradient of a depthwise conv is, per channel and image, the correlation of the
    input with the output gradient: one depthwise conv of ``(1, N*G, H, W)`` whose ``N*G``
    kernels are the ``H`` x ``W`` output gradients, summed over images. At the supernet's
    shapes that is 4-6x faster on a CPU than ``convolution_backward``'s weight gradient in
    channels_last (6-17x in NCHW), which was the largest single cost of a search step. The
    input gradient is the conv with the flipped kernel. On a GPU, where a conv whose kernels are
    whole maps is slow, both come from the library's ``convolution_backward``.
    """
    n, g, h, w = grad.shape
    kh, kw = weight.shape[-2:]
    if h * w <= MATRIX_DEPTHWISE_MAX_PIXELS:
        matrix = _depthwise_matrix(weight, h, w)
        grad_y = grad.reshape(n, g, h * w).permute(1, 2, 0)  # (G, out pixel, N)
        grad_weight = None
        if x is not None:
            xs = x.view(n, g, h * w).permute(1, 0, 2)  # (G, N, in pixel)
            grad_matrix = torch.bmm(grad_y, xs).view(g, h * w * h * w)
            taps = _tap_matrices(h, w, kh, kw, x.dtype, x.device)
            grad_weight = (grad_matrix @ taps.t()).view(g, 1, kh, kw)
        grad_x = torch.bmm(matrix.transpose(1, 2), grad_y).permute(2, 0, 1).reshape(n, g, h, w)
        return grad_x, grad_weight
    padding = (kh // 2, kw // 2)
    grad = grad.contiguous()
    if library_conv_gradients(grad.device):
        grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad, x if x is not None else grad, weight, None, [1, 1], list(padding), [1, 1],
            False, [0, 0], g, [True, x is not None, False],
        )  # fmt: skip
        return grad_x, grad_weight
    grad_x = F.conv2d(grad, weight.flip(-2, -1), padding=padding, groups=g)
    if x is None:
        return grad_x, None
    images = x.reshape(1, n * g, h, w)  # (image, channel) pairs in the same order as
    kernels = grad.view(n * g, 1, h, w)  # their kernels: no transposing copy of either
    per_image = F.conv2d(images, kernels, padding=padding, groups=n * g)
    return grad_x, per_image.view(n, g, kh, kw).sum(0).unsqueeze(1)


def library_conv_gradients(device: torch.device) -> bool:
    """Whether the convs' gradients on ``device`` all come from the library's
    ``convolution_backward`` (on GPUs) rather than from the CPU-tuned forms below."""
    return device.type != "cpu"


#: Dense (atrous) conv weight gradients are computed as a conv of the input with the output
#: gradient as kernel (batch and channels swapped) from this kernel area, or from this map area,
#: up: 1.5-2.2x faster than ``convolution_backward`` there on a CPU, slower below (on a GPU,
#: ``convolution_backward`` throughout).
DENSE_GRAD_AS_CONV_MIN_TAPS = 25
DENSE_GRAD_AS_CONV_MIN_PIXELS = 256


#: Both atrous convs run as one call (the 3x3 zero-padded to the 5x5's window) while that adds
#: at most this many FLOPs to a training step (forward, input and weight gradients): on a CPU a
#: conv call's forward and backward have a fixed cost of a few hundred microseconds, which
#: outweighs that much arithmetic on small maps.
ATROUS_MERGE_MAX_EXTRA_FLOPS = 12e6


def merge_atrous(paths: int, n: int, h: int, w: int, edges: int, channels: int) -> bool:
    """Whether :class:`InputEdges` runs both atrous convs as one call on an ``h`` x ``w`` map:
    where both live windows (:func:`live_taps`) agree, or where padding the 3x3 to the 5x5's
    window adds at most :data:`ATROUS_MERGE_MAX_EXTRA_FLOPS` (3x the forward's extra FLOPs)."""
    (h3, w3), (h5, w5) = _live_size(3, 2, h, w), _live_size(5, 2, h, w)
    extra_macs = paths * n * h * w * edges * channels * channels * (h5 * w5 - h3 * w3)
    return 3 * 2 * extra_macs <= ATROUS_MERGE_MAX_EXTRA_FLOPS


def _columns(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(C, B*H*W)``."""
    b, c, h, w = x.shape
    return x.view(b, c, h * w).transpose(0, 1).reshape(c, b * h * w)


def _uncolumns(y: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
    """``(O, B*H*W)`` -> ``(B, O, H, W)``: the inverse of :func:`_columns`."""
    return y.view(-1, b, h * w).transpose(0, 1).reshape(b, -1, h, w)


def _atrous_forward(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Dense conv, dilation 2, 'same' padding, of ``(B, C, H, W)`` with ``(O, C, kh, kw)``. A
    1x1 kernel (maps of at most 2x2) runs as one matmul with the images side by side in the
    columns: 4-5x faster on a CPU (forward and backward) than mkldnn, or than a matmul per
    image, whose weight operand is broadcast (copied) over the batch."""
    kh, kw = weight.shape[-2:]
    if kh == kw == 1:
        b, c, h, w = x.shape
        return _uncolumns(torch.mm(weight.view(-1, c), _columns(x)), b, h, w)
    return F.conv2d(x, weight, padding=(kh // 2 * 2, kw // 2 * 2), dilation=2)


def _atrous_backward(
    grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, weight_grad: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of :func:`_atrous_forward` for its input and (if ``weight_grad``) weight."""
    b, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    grad = grad.contiguous()
    if kh == kw == 1:
        grad_y = _columns(grad)
        grad_weight = None
        if weight_grad:
            grad_weight = torch.mm(grad_y, _columns(x).t()).view(o, c, 1, 1)
        return _uncolumns(torch.mm(weight.view(o, c).t(), grad_y), b, h, w), grad_weight
    padding = [kh // 2 * 2, kw // 2 * 2]
    by_conv = not library_conv_gradients(grad.device) and (
        kh * kw >= DENSE_GRAD_AS_CONV_MIN_TAPS or h * w >= DENSE_GRAD_AS_CONV_MIN_PIXELS
    )
    mask = [True, weight_grad and not by_conv, False]
    grad_x, grad_weight, _ = torch.ops.aten.convolution_backward(
        grad, x, weight, None, [1, 1], padding, [2, 2], False, [0, 0], 1, mask
    )
    if weight_grad and by_conv:
        # gw[o, c, i, j] = sum_{n, y, x} x_pad[n, c, y + 2i, x + 2j] * grad[n, o, y, x]
        swapped = F.conv2d(x.transpose(0, 1), grad.transpose(0, 1), padding=padding, stride=2)
        grad_weight = swapped.transpose(0, 1)
    return grad_x, grad_weight


def _batch_norm_forward(
    bns: Sequence[nn.BatchNorm2d], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Non-affine BatchNorm of ``x`` with the running statistics and mode of ``bns``, updating
    them as ``bn(x)`` does; returns ``(output, batch mean, batch inverse std)``.

    Several ``bns`` belong to joined readers (:func:`mixed_ops`): ``x``'s channels are laid out
    (kernel, unit, ...) and each holds its units' share of both kernels' channels; their
    statistics are joined for the call and written back.

    On a GPU ``x`` is made contiguous first: the library's kernel keeps its input's strides
    there (on a CPU it returns a contiguous output), and the callers view the output as NCHW."""
    if x.device.type != "cpu":
        x = x.contiguous()
    first = bns[0]
    momentum = 0.0
    if first.training:
        momentum = _momentum(bns)
        for bn in bns:
            bn.num_batches_tracked.add_(1)
    mean, var = _joined(bns, "running_mean"), _joined(bns, "running_var")
    if (
        first.training
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() >= REDUCED_BN_MIN_SIZE
    ):
        result = _batch_norm_reduced(x, mean, var, momentum, first.eps)
    else:
        result = torch.ops.aten.native_batch_norm(
            x, None, None, mean, var, first.training, momentum, first.eps
        )
    if first.training and len(bns) > 1 and mean is not None and var is not None:
        sizes = [bn.num_features // 2 for bn in bns]
        for name, joined in (("running_mean", mean), ("running_var", var)):
            for bn, part in zip(bns, joined.view(2, -1).split(sizes, 1), strict=True):
                getattr(bn, name).view(2, -1).copy_(part)
    return result


def _momentum(bns: Sequence[nn.BatchNorm2d]) -> float:
    """The momentum of the next training-mode update of ``bns``, which must agree (with
    ``momentum=None``, a cumulative average: one over the updates so far, this one included)."""
    values = {
        bn.momentum if bn.momentum is not None else 1.0 / (float(bn.num_batches_tracked) + 1)
        for bn in bns
    }
    if len(values) > 1:
        raise ValueError(f"joined BatchNorms must update alike; their momenta are {values}")
    return values.pop()


def _joined(bns: Sequence[nn.BatchNorm2d], name: str) -> torch.Tensor | None:
    """The running statistic ``name`` of ``bns`` in the joined channel layout (see
    :func:`_batch_norm_forward`): ``bns[0]``'s own tensor for one module, else a copy."""
    tensors = [getattr(bn, name) for bn in bns]
    if len(tensors) == 1 or tensors[0] is None:
        return tensors[0]
    return torch.cat([t.view(2, -1) for t in tensors], 1).view(-1)


#: Training-mode BatchNorm of a float32 CPU tensor with at least this many elements takes its
#: batch statistics with plain reductions (:func:`_batch_norm_reduced`): in a search step
#: 1.2-1.8x faster than the library's kernel, whose statistics pass dominates there, from about
#: 120k elements up; slower below 90k, where the extra calls' fixed cost outweighs it.
REDUCED_BN_MIN_SIZE = 100_000


def _batch_norm_reduced(
    x: torch.Tensor,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    momentum: float,
    eps: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``native_batch_norm`` in training mode without an affine map, from two-pass (centred)
    statistics over ``(N, H*W)`` per channel: the output, the batch mean and inverse std, and
    the running statistics updated with the unbiased variance, as the library's kernel does."""
    n, c, h, w = x.shape
    count = n * h * w
    flat = x.reshape(n, c, h * w)
    mean = flat.sum(2).sum(0).div_(count)
    out = flat - mean.view(1, c, 1)
    var = (out * out).sum(2).sum(0).div_(count)
    invstd = (var + eps).rsqrt_()
    out.mul_(invstd.view(1, c, 1))
    if running_mean is not None and running_var is not None:
        running_mean.mul_(1.0 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1.0 - momentum).add_(var, alpha=momentum * count / max(count - 1, 1))
    return out.view(n, c, h, w), mean, invstd


@functools.lru_cache(maxsize=256)
def _constant(value: float, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A ``(size,)`` tensor of ``value``, made once (read-only: callers must not modify it)."""
    return torch.full((size,), value, dtype=dtype, device=device)


def _batch_norm_backward(
    bns: Sequence[nn.BatchNorm2d],
    training: bool,
    grad: torch.Tensor,
    out: torch.Tensor,
    invstd: torch.Tensor,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gradients of :func:`_batch_norm_forward` (run in mode ``training``) from its output
    ``out`` (``(x - mean) * invstd`` with the batch's statistics in training mode, the running
    ones in eval mode), for the output gradient ``grad * scale``: the input gradient and,
    where ``scale`` (per channel) is given, per channel ``sum(grad * out)`` over the batch and
    the map (in at least float32: :func:`_sum_dtype`).

    Saving the output instead of the input lets the caller drop its own copy of the output,
    and that channel sum is the op weights' gradient of a mixed op, for free in training mode:
    it is the gradient of an affine weight, which the library's kernel computes in the same
    pass.
    """
    channels = out.shape[1]
    # On a GPU the library's kernel picks its layout by its inputs': the same as ``out``'s
    # (contiguous) there.
    if grad.device.type != "cpu":
        grad = grad.contiguous()
    if training:
        # With mean 0 and inverse std 1 the kernel's normalised input is ``out`` itself; the
        # true inverse std (times ``scale``) goes in as the affine weight.
        weight = invstd if scale is None else invstd * scale
        grad_x, grad_scale, _ = torch.ops.aten.native_batch_norm_backward(
            grad, out, weight, None, None,
            _constant(0.0, channels, invstd.dtype, out.device),
            _constant(1.0, channels, invstd.dtype, out.device),
            True, bns[0].eps, [True, scale is not None, False],
        )  # fmt: skip
        return grad_x, None if scale is None else grad_scale.to(_sum_dtype(grad_scale.dtype))
    # Eval mode: an affine map with the running statistics.
    weight = (_joined(bns, "running_var") + bns[0].eps).rsqrt()
    if scale is None:
        return grad * weight.to(out.dtype).view(1, channels, 1, 1), None
    grad_x = grad * (weight * scale).to(out.dtype).view(1, channels, 1, 1)
    return grad_x, (grad * out).sum((0, 2, 3), dtype=_sum_dtype(out.dtype))


def _sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the op weights' gradients are summed in: float32, or float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


#: ``InputEdges``'s parameters, in the order ``_MixedOps`` takes and returns them.
_PARAMETERS = (
    "sep3_depthwise",
    "sep3_pointwise",
    "sep5_depthwise",
    "sep5_pointwise",
    "atrous3",
    "atrous5",
)


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

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return mixed_ops((self,), (x,), weights)

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

    def op_buffers(self, path: int, edge: int, op: str) -> dict[str, torch.Tensor]:
        """The BatchNorm running statistics of ``op`` on edge ``edge`` of path ``path``, named
        as in ``OPS[op](C, 1, False)`` (views: a training-mode call through them updates them
        here); for ``torch.func.functional_call``."""
        stats = ("running_mean", "running_var")
        shape = (2, self.paths, self.edges, self.channels)  # (kernel, path, edge, channel)
        if op in ("sep_conv_3x3", "sep_conv_5x5"):
            k = ("sep_conv_3x3", "sep_conv_5x5").index(op)
            return {
                f"{unit}.bn.{name}": getattr(bn, name).view(shape)[k, path, edge]
                for unit, bn in enumerate(self.sep_bn)
                for name in stats
            }
        if op in ("atrous_conv_3x3", "atrous_conv_5x5"):
            k = ("atrous_conv_3x3", "atrous_conv_5x5").index(op)
            return {
                f"bn.{name}": getattr(self.atrous_bn, name).view(shape)[k, path, edge]
                for name in stats
            }
        if op not in PRIMITIVES:
            raise ValueError(f"unknown op {op!r}; expected one of {PRIMITIVES}")
        return {}


def mixed_ops(
    readers: Sequence[InputEdges], xs: Sequence[torch.Tensor], weights: torch.Tensor
) -> torch.Tensor:
    """What each of ``readers`` computes on its input (``readers[i](xs[i], its op weights)``),
    in one call, stacked on the path axis: ``(N, sum of their paths, E, C, H, W)``.

    ``weights`` stacks the readers' op weights in ``readers`` order,
    ``(len(readers) * E, len(PRIMITIVES))``. The readers must agree on ``edges``, ``channels``
    and their BatchNorms' mode, momentum and eps, and the inputs on batch, map size, dtype and
    device; each reader keeps its own weights and BatchNorm statistics. Every call has a fixed
    cost of a few hundred tensor ops, which dominates on the supernet's small maps, so a cell
    runs its ``prev`` and ``prev_prev`` edges in one call.
    """
    _check_joinable(readers, xs, weights)
    params = [getattr(reader, name) for reader in readers for name in _PARAMETERS]
    if torch.is_grad_enabled():
        return _MixedOps.apply(tuple(readers), *xs, weights, *params)
    return _mixed_forward(tuple(readers), xs, weights, *params)[0]


def _batch_norms(reader: InputEdges) -> tuple[nn.BatchNorm2d, ...]:
    return (*reader.sep_bn, reader.atrous_bn)


def _check_joinable(
    readers: Sequence[InputEdges], xs: Sequence[torch.Tensor], weights: torch.Tensor
) -> None:
    """Raises ``ValueError`` unless ``readers`` can run ``xs`` with ``weights`` as one call."""
    first, x0 = readers[0], xs[0]
    expected = (len(readers) * first.edges, len(PRIMITIVES))
    if tuple(weights.shape) != expected:
        raise ValueError(
            f"op weights of shape {tuple(weights.shape)} for {len(readers)} reader(s) of "
            f"{first.edges} edges: expected {expected}"
        )
    for reader, x in zip(readers, xs, strict=True):
        if (reader.edges, reader.channels) != (first.edges, first.channels):
            raise ValueError(
                f"readers of {reader.edges} edges of {reader.channels} channels and of "
                f"{first.edges} edges of {first.channels} channels cannot run as one call"
            )
        if x.dim() != 4 or x.shape[1] != reader.paths * reader.channels:
            raise ValueError(
                f"an input of shape {tuple(x.shape)} for a reader of {reader.paths} paths of "
                f"{reader.channels} channels: expected (N, {reader.paths * reader.channels}, H, W)"
            )
        if x is not x0 and (
            (x.shape[0], *x.shape[2:]) != (x0.shape[0], *x0.shape[2:])
            or (x.dtype, x.device) != (x0.dtype, x0.device)
        ):
            raise ValueError(
                f"inputs run as one call must agree on batch, map size, dtype and device: "
                f"{tuple(x0.shape)} {x0.dtype} {x0.device} and "
                f"{tuple(x.shape)} {x.dtype} {x.device}"
            )
        for bn, bn0 in zip(_batch_norms(reader), _batch_norms(first), strict=True):
            if (bn.training, bn.momentum, bn.eps) != (bn0.training, bn0.momentum, bn0.eps):
                raise ValueError(
                    "readers run as one call must agree on their BatchNorms' mode, momentum "
                    f"and eps: {(bn0.training, bn0.momentum, bn0.eps)} and "
                    f"{(bn.training, bn.momentum, bn.eps)}"
                )


# Joined readers (:func:`mixed_ops`) line their inputs' paths up as ``units``: each reader's
# paths in ``readers`` order, one entry per reader in ``units`` (its path count). Every stacked
# channel axis below is laid out (kernel, unit, edge, channel); each unit uses its reader's weights.


def _per_unit(weights: Sequence[torch.Tensor], units: tuple[int, ...], keep: int) -> torch.Tensor:
    """``(2, E, *rest)`` per reader -> each reader's weights once per unit of it, in (kernel,
    unit, edge) order, flattened up to the last ``keep`` dims:
    ``(2 * U * E * ..., *rest[-keep:])``."""
    parts = [w.unsqueeze(1).expand(2, u, *w.shape[1:]) for w, u in zip(weights, units, strict=True)]
    joined = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return joined.reshape(-1, *joined.shape[-keep:])


def _by_reader(t: torch.Tensor, units: tuple[int, ...], dim: int) -> tuple[torch.Tensor, ...]:
    """``t``'s runs of units along ``dim``, one per reader (views)."""
    return (t,) if len(units) == 1 else t.split(units, dim)


def _reader_sums(t: torch.Tensor, units: tuple[int, ...], dim: int) -> list[torch.Tensor]:
    """Per reader, the sum of ``t`` over its units along ``dim`` (new contiguous tensors)."""
    return [part.sum(dim) for part in _by_reader(t, units, dim)]


@functools.lru_cache(maxsize=16)
def _unit_readers(units: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """The reader of each unit, ``(U,)``."""
    return torch.tensor([i for i, u in enumerate(units) for _ in range(u)], device=device)


def _unit_columns(weights: torch.Tensor, units: tuple[int, ...]) -> torch.Tensor:
    """Op weights ``(readers * E, ops)`` -> per op, unit and edge, ``(ops, U, E)``; for one
    reader ``(ops, 1, E)``, broadcast over its paths."""
    ops = weights.shape[1]
    if len(units) == 1:
        return weights.t().contiguous().view(ops, 1, -1)
    per_reader = weights.view(len(units), -1, ops).permute(2, 0, 1)  # (ops, readers, E)
    return per_reader.index_select(1, _unit_readers(units, weights.device))


def _pointwise_forward(
    y: torch.Tensor, weights: Sequence[torch.Tensor], units: tuple[int, ...]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The pointwise convs of ``y`` ``(N, 2*U*E*C, H, W)`` (layout kernel, unit, edge, channel)
    with each reader's ``(2*E, C, C)`` weights, shared by its units, as batched matmuls (on
    CPU a grouped 1x1 conv falls back to one call per group). Returns the output and the
    input in the layout that :func:`_pointwise_backward` takes."""
    n, g, h, w = y.shape
    c = weights[0].shape[-1]
    e = weights[0].shape[0] // 2
    u_all = sum(units)
    if c <= h * w:
        # (2*U*E, C, C) @ (N, 2*U*E, C, H*W), the weights repeated per unit.
        ys = y.view(n, 2 * u_all * e, c, h * w)
        repeated = _per_unit([t.view(2, e, c, c) for t in weights], units, 2)
        return torch.matmul(repeated, ys).view(n, g, h, w), [ys]
    # Small maps: the weights outweigh the activations, so move the activations instead.
    outs, saved = [], []
    for weight, part in zip(
        weights, _by_reader(y.view(n, 2, u_all, e, c, h * w), units, 2), strict=True
    ):
        ys = part.permute(1, 3, 4, 2, 0, 5).reshape(2 * e, c, -1)
        outs.append(torch.bmm(weight, ys).view(2, e, c, part.shape[2], n, h * w))
        saved.append(ys)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 3)
    return out.permute(4, 0, 3, 1, 2, 5).reshape(n, g, h, w), saved


def _pointwise_backward(
    grad: torch.Tensor,
    saved: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    units: tuple[int, ...],
    weight_grad: bool,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Gradients of :func:`_pointwise_forward` for its input and (if ``weight_grad``) each
    reader's weights."""
    n, g, h, w = grad.shape
    c = weights[0].shape[-1]
    e = weights[0].shape[0] // 2
    u_all = sum(units)
    grad_weights = None
    if c <= h * w:
        grad_y = grad.reshape(n, 2 * u_all * e, c, h * w)
        if weight_grad:
            per_unit = torch.matmul(grad_y, saved[0].transpose(-1, -2)).sum(0)
            sums = _reader_sums(per_unit.view(2, u_all, e, c, c), units, 1)
            grad_weights = [t.view(2 * e, c, c) for t in sums]
        repeated = _per_unit([t.view(2, e, c, c) for t in weights], units, 2)
        return torch.matmul(repeated.transpose(-1, -2), grad_y).view(n, g, h, w), grad_weights
    grad_weights = [] if weight_grad else None
    grads_in = []
    parts = _by_reader(grad.reshape(n, 2, u_all, e, c, h * w), units, 2)
    for weight, ys, part in zip(weights, saved, parts, strict=True):
        grad_y = part.permute(1, 3, 4, 2, 0, 5).reshape(2 * e, c, -1)
        if grad_weights is not None:
            grad_weights.append(torch.bmm(grad_y, ys.transpose(1, 2)))
        grad_in = torch.bmm(weight.transpose(1, 2), grad_y)
        grads_in.append(grad_in.view(2, e, c, part.shape[2], n, h * w))
    grad_in = grads_in[0] if len(grads_in) == 1 else torch.cat(grads_in, 3)
    return grad_in.permute(4, 0, 3, 1, 2, 5).reshape(n, g, h, w), grad_weights


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the mixed ops run in: autocast's where it is on, else ``x``'s."""
    device = x.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return x.dtype


def _separable_weights(
    params: tuple[torch.Tensor, ...], kh: int, kw: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both separable convs' weights (``params`` in ``_PARAMETERS`` order), the depthwise ones
    fitted to ``kh`` x ``kw`` live taps: ``(unit, kernel, E, C, 1, kh, kw)`` and
    ``(unit, kernel * E, C, C)``. Rebuilt in the backward rather than saved (a copy)."""
    sep3_dw, sep3_pw, sep5_dw, sep5_pw = params[:4]
    _, e, c = sep3_pw.shape[:3]
    depthwise = torch.stack([_fit(sep3_dw, kh, kw), _fit(sep5_dw, kh, kw)], dim=1)
    return depthwise, torch.stack([sep3_pw, sep5_pw], dim=1).view(2, 2 * e, c, c)


def _atrous_weights(
    params: tuple[torch.Tensor, ...], h: int, w: int, merged: bool
) -> list[torch.Tensor]:
    """The atrous convs' live taps on an ``h`` x ``w`` map, ``(E*C, C, kh, kw)`` each, or both
    in one weight (the 3x3 padded to the 5x5's window) where ``merged``. Rebuilt in the
    backward rather than saved (the merged weight is a copy)."""
    atrous3, atrous5 = params[4:]
    live5 = _live_size(5, 2, h, w)
    w3 = _fit(atrous3, *(live5 if merged else _live_size(3, 2, h, w))).flatten(0, 1)
    w5 = _fit(atrous5, *live5).flatten(0, 1)
    return [torch.cat([w3, w5])] if merged else [w3, w5]


def _pools(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``x`` in the pools' layout, its 3x3 max pool (contiguous) with the argmax indices (in
    the pools' layout) and its 3x3 average pool (contiguous). On a CPU the pools run in
    channels_last, 2-7x faster there (forward and backward, the layout changes included); on
    a GPU in NCHW, where the library's channels_last average-pool backward with padding was
    measured wrong (PyTorch 2.11, CUDA). The backward recomputes them rather than keep them
    (and the int64 indices) alive."""
    x_last = x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x
    max_pool, indices = torch.ops.aten.max_pool2d_with_indices(x_last, [3, 3], [1, 1], [1, 1])
    avg_pool = F.avg_pool2d(x_last, 3, 1, 1, count_include_pad=False)
    return x_last, max_pool.contiguous(), indices, avg_pool.contiguous()


def _paths_on_batch(r: torch.Tensor, paths: int) -> torch.Tensor:
    """``(N, P*C, H, W)`` -> ``(P*N, C, H, W)``."""
    n, _, h, w = r.shape
    return r.view(n, paths, -1, h, w).transpose(0, 1).reshape(-1, r.shape[1] // paths, h, w)


def _parameter_names(readers: int) -> list[str]:
    """The names under which :func:`_mixed_forward` saves the readers' parameters."""
    return [f"{name}.{i}" for i in range(readers) for name in _PARAMETERS]


def _atrous_batches(
    r: torch.Tensor,
    units: tuple[int, ...],
    by_reader: Sequence[Sequence[torch.Tensor]],
    merged: Sequence[bool],
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Per reader, what its atrous convs start from in both passes: its paths of ``r``
    (``relu(x)``, ``(N, U*C, H, W)``) on the batch axis, ``(paths*N, C, H, W)``, and the live
    taps of its weights (:func:`_atrous_weights`, both kernels in one where ``merged``)."""
    _, channels, h, w = r.shape
    c = channels // sum(units)
    parts = _by_reader(r, tuple(u * c for u in units), 1)
    for part, u, params, merge in zip(parts, units, by_reader, merged, strict=True):
        yield _paths_on_batch(part, u), _atrous_weights(params, h, w, merge)


def _mixed_forward(
    readers: tuple[InputEdges, ...],
    xs: Sequence[torch.Tensor],
    weights: torch.Tensor,
    *params: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, object]]:
    """:func:`mixed_ops`'s forward with ``params`` (each reader's, in ``_PARAMETERS`` order),
    as plain tensor ops.

    Returns the output ``(N, U, E, C, H, W)``, the tensors :func:`_mixed_backward` needs and
    the facts it needs about them. Updates the BatchNorm running statistics in training mode.
    """
    dtype = _compute_dtype(xs[0])
    with torch.autocast(xs[0].device.type, enabled=False):
        x = (xs[0] if len(xs) == 1 else torch.cat(xs, 1)).contiguous()  # NCHW views below
        out, saved, info = _mixed_forward_in(
            readers, x.to(dtype), weights, *(t.to(dtype) for t in params)
        )
    # The parameters themselves (no copy, in any dtype); the backward converts them again and
    # rebuilds everything derived from them.
    saved.update(zip(_parameter_names(len(readers)), params, strict=True))
    return out, saved, info


def _mixed_forward_in(
    readers: tuple[InputEdges, ...], x: torch.Tensor, weights: torch.Tensor, *params: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, object]]:
    """:func:`_mixed_forward` with ``x`` (the inputs joined on channels) and ``params`` in the
    dtype to compute in."""
    n, _, h, w = x.shape
    units = tuple(r.paths for r in readers)
    u_all, e, c = sum(units), readers[0].edges, readers[0].channels
    by_reader = [
        params[i * len(_PARAMETERS) : (i + 1) * len(_PARAMETERS)] for i in range(len(units))
    ]
    dtype = x.dtype
    training = tuple(bn.training for bn in _batch_norms(readers[0]))  # alike (_check_joinable)
    saved: dict[str, torch.Tensor] = {"x": x, "weights": weights}
    r = F.relu(x)

    # Both separable convs, layout (kernel, unit, edge, channel) on the channel axis, on the
    # live taps of the 5x5 for this map.
    kh, kw = _live_size(5, 1, h, w)
    # per reader: (unit, kernel, E, C, 1, kh, kw) and (unit, kernel * E, C, C)
    depthwise, pointwise = zip(*(_separable_weights(p, kh, kw) for p in by_reader), strict=True)
    y = r.view(n, 1, u_all, 1, c, h, w).expand(n, 2, u_all, e, c, h, w)
    y = y.reshape(n, 2 * u_all * e * c, h, w)
    for unit in range(2):
        if unit:
            y = F.relu(y)
        d = _depthwise_forward(y, _per_unit([t[unit] for t in depthwise], units, 3))
        q, inputs = _pointwise_forward(d, [t[unit] for t in pointwise], units)
        saved.update((f"pointwise_in{unit}.{i}", t) for i, t in enumerate(inputs))
        y, _, saved[f"invstd{unit}"] = _batch_norm_forward(
            [reader.sep_bn[unit] for reader in readers], q
        )
        saved[f"bn_out{unit}"] = y  # the backward needs only BN's output (see there)
    sep = y.view(n, 2, u_all, e, c * h * w)

    # Dense atrous convs: paths go on the batch axis, so the big (E*C, C, k, k) weights are
    # used as they are (repeating them per path would dominate the step's memory), one batch
    # per reader; BN still sees (kernel, unit, edge, channel) on the channel axis. Only the
    # live taps run, in one call for both kernels where :func:`merge_atrous` says so. Each
    # output is copied straight into its place.
    # Per reader: merging saves a conv call per reader and pads the 3x3 for its units only.
    merged = tuple(merge_atrous(u, n, h, w, e, c) for u in units)
    qa = x.new_empty(n, 2, u_all, e * c, h, w)
    batches = _atrous_batches(r, units, by_reader, merged)
    for u, merge, (xb, atrous_weights), qa_part in zip(
        units, merged, batches, _by_reader(qa, units, 2), strict=True
    ):
        if merge:
            a = _atrous_forward(xb, atrous_weights[0]).view(u, n, 2, e * c, h, w)
            qa_part.copy_(a.permute(1, 2, 0, 3, 4, 5))
            continue
        for k, weight in enumerate(atrous_weights):
            a = _atrous_forward(xb, weight).view(u, n, e * c, h, w)
            qa_part[:, k].copy_(a.transpose(0, 1))
    atrous, _, saved["invstd_atrous"] = _batch_norm_forward(
        [reader.atrous_bn for reader in readers], qa.view(n, 2 * u_all * e * c, h, w)
    )
    saved["bn_out_atrous"] = atrous
    atrous = atrous.view(n, 2, u_all, e, c * h * w)

    # Weight-free ops: once per input, shared by every edge.
    _, max_pool, _, avg_pool = _pools(x)

    # sum_k weights[e, k] * op_k, accumulated in place; `none` adds nothing.
    columns = _unit_columns(weights.to(dtype), units)  # (ops, U or 1, E)

    def column(op: str) -> torch.Tensor:
        return columns[_I[op]].view(1, -1, e, 1)

    out = sep[:, 0] * column("sep_conv_3x3")
    out.addcmul_(sep[:, 1], column("sep_conv_5x5"))
    out.addcmul_(atrous[:, 0], column("atrous_conv_3x3"))
    out.addcmul_(atrous[:, 1], column("atrous_conv_5x5"))
    for op, free in (("max_pool_3x3", max_pool), ("avg_pool_3x3", avg_pool), ("skip_connect", x)):
        out.addcmul_(free.view(n, u_all, 1, c * h * w), column(op))
    info = {"merged": merged, "taps": (kh, kw), "training": training, "units": units}
    return out.view(n, u_all, e, c, h, w), saved, info


def _mixed_backward(
    readers: tuple[InputEdges, ...],
    saved: dict[str, torch.Tensor],
    info: dict[str, object],
    grad: torch.Tensor,
    params_grad: bool = True,
) -> list[torch.Tensor | None]:
    """Gradients of :func:`_mixed_forward` for the joined ``x``, ``weights`` and (if
    ``params_grad``; the architecture step needs none) each reader's parameters."""
    n, u_all, e, c, h, w = grad.shape
    units: tuple[int, ...] = info["units"]
    x = saved["x"]
    g = grad.to(x.dtype).reshape(n, u_all, e, c * h * w)
    columns = _unit_columns(saved["weights"].to(x.dtype), units)  # (ops, U or 1, E)
    train_sep0, train_sep1, train_atrous = info["training"]
    kh, kw = info["taps"]

    # Gradient of the op weights: <grad, op_k output> per edge. The weight-free ops' come from
    # their outputs; the convs' from their BatchNorm backward (see _batch_norm_backward).
    by_path = g.view(n * u_all, e, c * h * w)
    x_last, max_pool, max_indices, avg_pool = _pools(x)
    # The weight-free ops are adjacent rows of PRIMITIVES: one product with ``g`` each for
    # their op weights' gradients and for d loss / d op output (summed over edges).
    free = slice(_I["max_pool_3x3"], _I["skip_connect"] + 1)
    # Stacked as whole maps, (N*U, 3, C*H*W), and read transposed by the product: a stack along
    # a last dim of 3 writes one float at a time, 3-6x slower.
    outputs = torch.stack([t.reshape(n * u_all, c * h * w) for t in (max_pool, avg_pool, x)], 1)
    free_sums = torch.bmm(by_path, outputs.transpose(1, 2))  # (N*U, E, 3)
    groups = len(units)
    if groups == 1:
        free_sums = free_sums.sum(0, dtype=_sum_dtype(x.dtype))
    else:
        per_unit = free_sums.view(n, u_all, e, 3).sum(0, dtype=_sum_dtype(x.dtype))
        free_sums = torch.cat(_reader_sums(per_unit, units, 0))
    # Rows in ``weights``' order (reader, edge).
    grad_weights = [
        torch.zeros(groups * e, 1, dtype=_sum_dtype(x.dtype), device=x.device),  # `none`
        free_sums,
    ]
    grad_free = torch.matmul(columns[free].transpose(0, 1), g).view(n, u_all, 3, c, h, w)

    def pool_grad(k: int) -> torch.Tensor:  # into the layout the pool kernels take
        return torch.empty_like(x_last).view(n, u_all, c, h, w).copy_(grad_free[:, :, k])

    grad_max = torch.ops.aten.max_pool2d_with_indices_backward(
        pool_grad(0).view(n, u_all * c, h, w),
        x_last, [3, 3], [1, 1], [1, 1], [1, 1], False, max_indices,
    )  # fmt: skip
    grad_avg = torch.ops.aten.avg_pool2d_backward(
        pool_grad(1).view(n, u_all * c, h, w),
        x_last, [3, 3], [1, 1], [1, 1], False, False, None,
    )  # fmt: skip

    # The conv ops' outputs all get ``g``, each scaled by its edge's op weight: one copy of
    # ``g`` per kernel, ``(N, 2*U*E*C, H, W)``, and the scales per channel go to the BN backward.
    g2 = g.unsqueeze(1).expand(n, 2, u_all, e, c * h * w).reshape(n, 2 * u_all * e * c, h, w)

    def scales(ops: tuple[str, str]) -> torch.Tensor:  # (2*U*E*C,); the ops' rows are adjacent
        pair = columns[_I[ops[0]] : _I[ops[1]] + 1].view(2, -1, e, 1)
        return pair.expand(2, u_all, e, c).reshape(-1)

    def per_edge(channel_sums: torch.Tensor) -> torch.Tensor:  # (2*U*E*C,) -> (readers*E, 2)
        per_unit = channel_sums.view(2, u_all, e, c)
        if groups == 1:
            return per_unit.sum((1, 3)).t()
        sums = torch.cat([part.sum((1, 3)) for part in per_unit.split(units, 1)], 1)
        return sums.t()

    # Separable convs, unit 1 then unit 0.
    params = [saved[name].to(x.dtype) for name in _parameter_names(groups)]
    size = len(_PARAMETERS)
    by_reader = [params[i * size : (i + 1) * size] for i in range(groups)]
    depthwise, pointwise = zip(*(_separable_weights(p, kh, kw) for p in by_reader), strict=True)
    r = F.relu(x)
    grad_y = g2
    # per reader, per unit: (kernel, E, C, 1, kh, kw) and (kernel, E, C, C, 1, 1)
    grad_depthwise: list[list[torch.Tensor]] = [[] for _ in range(groups)]
    grad_pointwise: list[list[torch.Tensor]] = [[] for _ in range(groups)]
    for unit, training in ((1, train_sep1), (0, train_sep0)):
        out = saved[f"bn_out{unit}"]
        grad_q, sums = _batch_norm_backward(
            [reader.sep_bn[unit] for reader in readers],
            training,
            grad_y,
            out,
            saved[f"invstd{unit}"],
            scales(("sep_conv_3x3", "sep_conv_5x5")) if unit else None,
        )
        if unit:
            grad_weights.append(per_edge(sums))
        # One saved input for all readers, or one per reader (see _pointwise_forward).
        inputs = [saved[name] for name in saved if name.startswith(f"pointwise_in{unit}.")]
        grad_d, grad_pw = _pointwise_backward(
            grad_q, inputs, [t[unit] for t in pointwise], units, params_grad
        )
        y = None  # the depthwise conv's input, for its weight gradient
        if params_grad and unit:
            y = F.relu(saved["bn_out0"])
        elif params_grad:
            y = r.view(n, 1, u_all, 1, c, h, w).expand(n, 2, u_all, e, c, h, w)
            y = y.reshape(n, 2 * u_all * e * c, h, w)
        weight = _per_unit([t[unit] for t in depthwise], units, 3)
        grad_y, grad_dw = _depthwise_backward(grad_d, y, weight)
        if unit:
            grad_y = torch.ops.aten.threshold_backward(grad_y, saved["bn_out0"], 0)
        if params_grad:
            sums = _reader_sums(grad_dw.view(2, u_all, e, c, 1, kh, kw), units, 1)
            for i in range(groups):
                grad_depthwise[i].insert(0, sums[i])
                grad_pointwise[i].insert(0, grad_pw[i].view(2, e, c, c, 1, 1))
    # Sum over kernels and edges: one sum over both is 10-20x slower on a CPU (a strided
    # reduction) than adding the two kernels' halves and then summing the edges.
    halves = grad_y.view(n, 2, u_all, e, c * h * w)
    grad_r = (halves[:, 0] + halves[:, 1]).sum(2).view(n, u_all, c, h, w)

    # Atrous convs.
    grad_qa, sums = _batch_norm_backward(
        [reader.atrous_bn for reader in readers],
        train_atrous,
        g2,
        saved["bn_out_atrous"],
        saved["invstd_atrous"],
        scales(("atrous_conv_3x3", "atrous_conv_5x5")),
    )
    grad_weights.append(per_edge(sums))
    grad_weights = torch.cat(grad_weights, 1).to(saved["weights"].dtype)
    grad_a = grad_qa.view(n, 2, u_all, e * c, h, w)
    grad_atrous = []
    merged = info["merged"]
    batches = _atrous_batches(r, units, by_reader, merged)
    for u, merge, (xb, atrous_weights), part, grad_r_part in zip(
        units,
        merged,
        batches,
        _by_reader(grad_a, units, 2),
        _by_reader(grad_r, units, 1),
        strict=True,
    ):
        if merge:
            part = part.permute(2, 0, 1, 3, 4, 5).reshape(u * n, 2 * e * c, h, w)
            grad_xb, grad_both = _atrous_backward(part, xb, atrous_weights[0], params_grad)
            grad_atrous.append(grad_both.split(e * c) if params_grad else None)
        else:  # one copy per kernel, into the (path, image) batch order of the convs
            per_kernel = [part[:, k].transpose(0, 1).reshape(u * n, e * c, h, w) for k in (0, 1)]
            w3, w5 = atrous_weights
            grad_xb, grad_w3 = _atrous_backward(per_kernel[0], xb, w3, params_grad)
            grad_xb5, grad_w5 = _atrous_backward(per_kernel[1], xb, w5, params_grad)
            grad_xb = grad_xb + grad_xb5
            grad_atrous.append((grad_w3, grad_w5))
        grad_r_part.add_(grad_xb.view(u, n, c, h, w).transpose(0, 1))
    grad_x = torch.ops.aten.threshold_backward(grad_r.view(n, u_all * c, h, w), x, 0)
    grad_x.view(n, u_all, c, h, w).add_(grad_free[:, :, 2])  # skip_connect
    grad_x.add_(grad_max).add_(grad_avg)
    if not params_grad:
        return [grad_x, grad_weights, *[None] * (groups * size)]

    grad_params = []
    for i in range(groups):
        # Stacked kernel-major, so each kernel's gradient is contiguous in its parameter's
        # layout: autograd then keeps it as the parameter's ``.grad`` instead of copying it.
        dw = torch.stack(grad_depthwise[i], dim=1)  # (kernel, unit, E, C, 1, kh, kw)
        pw = torch.stack(grad_pointwise[i], dim=1)  # (kernel, unit, E, C, C, 1, 1)
        grad_w3, grad_w5 = grad_atrous[i]
        grad_params += [
            _fit(dw[0], 3, 3),
            pw[0],
            _fit(dw[1], 5, 5),
            pw[1],
            _fit(grad_w3.view(e, c, c, *grad_w3.shape[-2:]), 3, 3),
            _fit(grad_w5.view(e, c, c, *grad_w5.shape[-2:]), 5, 5),
        ]
    return [grad_x, grad_weights, *grad_params]


class _MixedOps(torch.autograd.Function):
    """:func:`mixed_ops`'s forward with a hand-written backward (:func:`_mixed_backward`).
    Inputs: the readers, their inputs, the stacked op weights, their parameters.
    First-order only: the search needs no double backward."""

    @staticmethod
    def forward(ctx, readers: tuple[InputEdges, ...], *tensors: torch.Tensor):
        groups = len(readers)
        xs, weights, params = tensors[:groups], tensors[groups], tensors[groups + 1 :]
        out, saved, info = _mixed_forward(readers, xs, weights, *params)
        ctx.readers, ctx.info, ctx.names = readers, info, list(saved)
        ctx.x_dtypes = [x.dtype for x in xs]
        ctx.x_channels = [x.shape[1] for x in xs]
        ctx.param_dtypes = [t.dtype for t in params]
        ctx.save_for_backward(*saved.values())
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        saved = dict(zip(ctx.names, ctx.saved_tensors, strict=True))
        # Parameter gradients are skipped where no parameter needs one (the architecture step
        # freezes the weights); the inputs and the op weights always get theirs.
        params_grad = any(ctx.needs_input_grad[len(ctx.readers) + 2 :])
        with torch.autocast(grad.device.type, enabled=False):
            grads = _mixed_backward(ctx.readers, saved, ctx.info, grad.contiguous(), params_grad)
        grad_x, grad_weights, *grad_params = grads
        grad_xs = grad_x.split(ctx.x_channels, 1) if len(ctx.readers) > 1 else (grad_x,)
        grad_xs = [t.to(dtype) for t, dtype in zip(grad_xs, ctx.x_dtypes, strict=True)]
        grad_params = [
            None if t is None else t.to(dtype)
            for t, dtype in zip(grad_params, ctx.param_dtypes, strict=True)
        ]
        return None, *grad_xs, grad_weights, *grad_params
