"""Evaluation-time prediction: multi-scale, horizontal flip and sliding-window inference.

``model`` is any callable ``image (N, 3, H, W) -> {"out": logits}`` or ``-> logits``; logits are
``(N, K, h, w)`` (resized to the input size here when the model returns another size). The caller
puts the model in ``eval()`` mode; nothing here moves tensors between devices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Model = Callable[[torch.Tensor], "torch.Tensor | Mapping[str, torch.Tensor]"]

#: How :func:`predict` combines its passes (scales and flips).
AVERAGES = ("probabilities", "logits")


def pass_count(scales: Sequence[float], flip: bool) -> int:
    """The passes :func:`predict` averages: one per scale, twice that with ``flip``."""
    return len(scales) * (2 if flip else 1)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear ``(N, C, H, W)`` -> ``(N, C, *size)``, ``align_corners=False``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _forward(model: Model, image: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` of ``model`` at the size of ``image`` ``(N, C, H, W)``."""
    out = model(image)
    logits = out["out"] if isinstance(out, Mapping) else out
    if logits.dim() != 4 or logits.shape[1] != num_classes:
        raise ValueError(
            f"model returned logits of shape {tuple(logits.shape)}; expected "
            f"(N, num_classes={num_classes}, H, W)"
        )
    return _resize(logits, tuple(image.shape[-2:]))


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ValueError(f"crop_size={size}; expected positive sides")
    return int(h), int(w)


def _starts(length: int, crop: int, stride: int) -> list[int]:
    """Window offsets covering ``0..length`` with the last window aligned to the border."""
    starts = list(range(0, length - crop + 1, stride))
    if starts[-1] != length - crop:
        starts.append(length - crop)
    return starts


@torch.no_grad()
def sliding_window(
    model_fn: Model,
    image: torch.Tensor,
    crop_size: int | Sequence[int],
    stride_rate: float,
    num_classes: int,
) -> torch.Tensor:
    """Logits ``(N, K, H, W)`` from crops of ``crop_size`` slid over ``image`` ``(N, C, H, W)``.

    The stride is ``ceil(crop * stride_rate)`` per side and the last window touches the border;
    a side shorter than the crop is zero-padded at the bottom/right and the padding cropped off.
    Logits of overlapping windows are averaged (divided by a per-pixel window count).
    """
    if not 0.0 < stride_rate <= 1.0:
        raise ValueError(f"stride_rate={stride_rate}; expected 0 < stride_rate <= 1")
    ch, cw = _pair(crop_size)
    h, w = image.shape[-2:]
    padded = F.pad(image, (0, max(cw - w, 0), 0, max(ch - h, 0)))
    ph, pw = padded.shape[-2:]
    logits = image.new_zeros(image.shape[0], num_classes, ph, pw)
    count = image.new_zeros(1, 1, ph, pw)
    for y in _starts(ph, ch, math.ceil(ch * stride_rate)):
        for x in _starts(pw, cw, math.ceil(cw * stride_rate)):
            crop = padded[..., y : y + ch, x : x + cw]
            logits[..., y : y + ch, x : x + cw] += _forward(model_fn, crop, num_classes)
            count[..., y : y + ch, x : x + cw] += 1
    return (logits / count)[..., :h, :w]


@torch.no_grad()
def predict(
    model: Model,
    image: torch.Tensor,
    *,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: int | Sequence[int] | None = None,
    stride_rate: float = 2 / 3,
    num_classes: int,
    average: str = "probabilities",
) -> torch.Tensor:
    """Class scores ``(N, K, H, W)`` for ``image`` ``(N, C, H, W)``, averaged over scales and
    flips; their argmax is the prediction and their softmax the class probabilities.

    For each scale ``s`` the original image is resized (bilinear) to ``round(H*s), round(W*s)``
    and run through ``model`` (through :func:`sliding_window` when ``crop_size`` is set; an image
    no larger than the crop is then one zero-padded window); with ``flip`` the mirrored image is
    run too and its logits mirrored back. Each pass's logits are resized to ``(H, W)`` and the
    passes combined with equal weight, as ``average`` says:

    * ``"probabilities"`` (DeepLab's multi-scale protocol): the mean of the passes' softmax
      probabilities, returned as its logarithm (computed as a log-sum-exp of the passes'
      log-softmax, so it stays finite), in float32 at least (bf16/float16 logits too);
    * ``"logits"``: the mean of the passes' logits.

    A single pass (one scale, no flip) returns that pass's logits either way. Within a pass, the
    overlapping windows of :func:`sliding_window` are averaged as logits.
    """
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales={tuple(scales)}; expected one or more positive scales")
    if average not in AVERAGES:
        raise ValueError(f"average={average!r}; expected one of {', '.join(AVERAGES)}")
    h, w = image.shape[-2:]

    def run(x: torch.Tensor) -> torch.Tensor:
        if crop_size is None:
            return _forward(model, x, num_classes)
        return sliding_window(model, x, crop_size, stride_rate, num_classes)

    passes = pass_count(scales, flip)
    total = None
    for s in scales:
        size = (max(1, round(h * s)), max(1, round(w * s)))
        scaled = _resize(image, size)
        outs = [run(scaled)]
        if flip:
            outs.append(run(scaled.flip(-1)).flip(-1))
        for out in outs:
            out = _resize(out, (h, w))
            if passes == 1:
                return out
            if average == "logits":
                total = out if total is None else total + out
            else:
                dtype = torch.promote_types(out.dtype, torch.float32)  # bf16: sum in float32
                out = torch.log_softmax(out, dim=1, dtype=dtype)
                total = out if total is None else torch.logaddexp(total, out)
    return total / passes if average == "logits" else total - math.log(passes)
