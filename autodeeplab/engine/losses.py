"""Segmentation losses on logits ``(N, K, H, W)`` and int64 targets ``(N, H, W)``.

Every loss skips pixels whose target is ``ignore_index`` and returns a scalar that is 0 (with a
gradient path to the logits, never NaN) when a batch has no valid pixel. ``build_loss`` combines
the registered losses (``LOSSES``) by name into one weighted sum.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"expected logits (N, K, H, W) and target (N, H, W); got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )
    if target.dtype != torch.int64:
        raise ValueError(f"target must be int64 class labels, got {target.dtype}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Mean of ``values[mask]``; 0 connected to ``logits``' graph when the mask is empty."""
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return values[mask].mean()


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-pixel cross-entropy (N, H, W); 0 at ignored pixels."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = 255
) -> torch.Tensor:
    """Cross-entropy averaged over the non-ignored pixels."""
    _check(logits, target)
    return _masked_mean(_pixel_ce(logits, target, ignore_index), target != ignore_index, logits)


def ohem_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    thresh: float = 0.7,
    min_kept: int = 100_000,
) -> torch.Tensor:
    """Online hard example mining cross-entropy (as in PSPNet/DeepLab Cityscapes recipes).

    Keeps the valid pixels whose loss exceeds ``-log(thresh)`` (target probability below
    ``thresh``); if fewer than ``min(min_kept, valid pixels)`` are kept, keeps that many of the
    hardest valid pixels instead. Returns the mean loss over the kept pixels.
    """
    _check(logits, target)
    if not 0.0 < thresh <= 1.0 or min_kept < 0:
        raise ValueError(f"ohem needs 0 < thresh <= 1 and min_kept >= 0; got {thresh}, {min_kept}")
    valid = (target != ignore_index).flatten()
    losses = _pixel_ce(logits, target, ignore_index).flatten()[valid]
    keep = losses.detach() > -math.log(thresh)
    k = min(int(min_kept), losses.numel())
    if int(keep.sum()) < k:
        keep[losses.detach().topk(k).indices] = True
    return _masked_mean(losses, keep, logits)


def dice(
    logits: torch.Tensor, target: torch.Tensor, *, ignore_index: int = 255, smooth: float = 1.0
) -> torch.Tensor:
    """Soft multi-class Dice loss over the whole batch.

    With softmax probabilities ``P`` and one-hot targets ``T`` over the valid pixels, per class
    ``c``: ``d_c = (2 * sum(P_c T_c) + smooth) / (sum(P_c) + sum(T_c) + smooth)``. Returns
    ``1 - mean(d_c)`` over the classes present in the target or in the argmax prediction.
    """
    _check(logits, target)
    num_classes = logits.shape[1]
    valid = target != ignore_index  # (N, H, W)
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    labels = torch.where(valid, target, 0)
    onehot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    scores = (2.0 * inter + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    predicted = F.one_hot(logits.detach().argmax(dim=1)[valid], num_classes).sum(0)
    present = (onehot.sum(dims) > 0) | (predicted > 0)
    if not bool(present.any()):
        return logits.sum() * 0.0
    return 1.0 - scores[present].mean()


def focal(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int = 255,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss ``-alpha_t (1 - p_t)^gamma log p_t`` (Lin et al. 2017), mean over valid pixels.

    ``alpha`` is a scalar or a per-class weight of length K; ``gamma=0, alpha=None`` is
    cross-entropy.
    """
    _check(logits, target)
    if not (math.isfinite(gamma) and gamma >= 0):
        raise ValueError(f"focal loss gamma={gamma}: expected a finite number >= 0")
    valid = target != ignore_index
    labels = torch.where(valid, target, 0).unsqueeze(1)
    log_pt = logits.log_softmax(dim=1).gather(1, labels).squeeze(1)  # (N, H, W)
    # 1 - p_t, kept above 0: where p_t rounds to 1 (an easy pixel), ``0 ** gamma``'s derivative
    # is infinite for gamma < 1 and times ``log p_t = 0`` makes a NaN gradient; the true
    # gradient there is 0, which the clamp gives.
    one_minus = (-torch.expm1(log_pt)).clamp(min=torch.finfo(log_pt.dtype).tiny)
    losses = -(one_minus**gamma) * log_pt
    if alpha is not None:
        weights = torch.as_tensor(alpha, dtype=losses.dtype, device=losses.device)
        if weights.dim() == 1:
            if weights.numel() != logits.shape[1]:
                raise ValueError(
                    f"alpha has {weights.numel()} entries for {logits.shape[1]} classes"
                )
            weights = weights[labels.squeeze(1)]
        losses = losses * weights
    return _masked_mean(losses, valid, logits)


#: Name -> loss function; filled here and never mutated afterwards.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": cross_entropy,
    "ohem": ohem_cross_entropy,
    "dice": dice,
    "focal": focal,
}


class WeightedLoss:
    """``loss(logits, target)`` -> sum of ``weight * LOSSES[name](logits, target, **options)``."""

    def __init__(self, terms: Mapping[str, tuple[float, Callable[..., torch.Tensor], dict]]):
        self.terms = dict(terms)

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        parts = [w * fn(logits, target, **kw) for w, fn, kw in self.terms.values()]
        return torch.stack(parts).sum()

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={w:g}" for name, (w, _, _) in self.terms.items())
        return f"WeightedLoss({inner})"


def build_loss(
    terms: Mapping[str, float] | str, *, ignore_index: int = 255, **options: object
) -> LossFn:
    """Weighted sum of named losses, e.g. ``build_loss({"ce": 1.0, "dice": 0.5})`` or ``"ohem"``.

    ``options`` (``thresh``, ``min_kept``, ``smooth``, ``gamma``, ``alpha``) go to the selected
    terms that take them; ``None`` values are dropped so config gaps keep the defaults. An option
    that no registered loss takes is a ValueError (a typo), as are unknown names and weights that
    are not positive and finite.
    """
    if isinstance(terms, str):
        terms = {terms: 1.0}
    if not terms:
        raise ValueError(f"no loss terms given; known: {sorted(LOSSES)}")
    options = {k: v for k, v in options.items() if v is not None}
    params = {name: set(inspect.signature(fn).parameters) for name, fn in LOSSES.items()}
    unused = set(options) - set().union(*params.values())
    if unused:
        raise ValueError(f"unknown loss options {sorted(unused)}")
    built = {}
    for name, weight in terms.items():
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}")
        if not (math.isfinite(weight) and weight > 0):
            raise ValueError(f"loss weight for {name!r} must be positive, got {weight}")
        kwargs = {k: v for k, v in options.items() if k in params[name]}
        built[name] = (float(weight), LOSSES[name], {"ignore_index": ignore_index, **kwargs})
    return WeightedLoss(built)
