"""Segmentation metrics from an accumulated confusion matrix."""

import math

import torch


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix; rows are targets, columns predictions.

    Pixels whose target equals ``ignore_index`` are skipped. Per-class scores are NaN for
    classes with an empty denominator, and those classes are left out of the means (as in the
    Cityscapes evaluation).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes={num_classes}; expected at least 1")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @classmethod
    def from_counts(cls, counts: torch.Tensor, ignore_index: int = 255) -> "ConfusionMatrix":
        """A matrix holding ``counts`` (C, C) (e.g. summed over processes)."""
        if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
            raise ValueError(f"counts of shape {tuple(counts.shape)}; expected (C, C)")
        out = cls(counts.shape[0], ignore_index)
        out._matrix = counts.detach().to(torch.int64).clone()
        return out

    @property
    def matrix(self) -> torch.Tensor:
        """(C, C) int64 counts; ``matrix[t, p]`` = pixels with target t predicted as p."""
        return self._matrix

    def reset(self) -> None:
        self._matrix = torch.zeros_like(self._matrix)

    def _check_range(self, labels: torch.Tensor, what: str) -> None:
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            value = int(labels[bad][0])
            ignored = " (only the target's pixels may carry the ignore index)"
            raise ValueError(
                f"{what} contains label {value}, outside 0..{self.num_classes - 1}"
                + (
                    ignored
                    if value == self.ignore_index
                    else f" (and not ignore_index={self.ignore_index})"
                )
            )

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``pred`` labels (N, H, W) or logits (N, C, H, W); ``target`` (N, H, W)."""
        if pred.dim() == target.dim() + 1:
            if pred.shape[1] != self.num_classes:
                raise ValueError(
                    f"logits have {pred.shape[1]} channels in shape {tuple(pred.shape)}, "
                    f"expected num_classes={self.num_classes}"
                )
            pred = pred.argmax(dim=1)
        if pred.shape != target.shape:
            raise ValueError(
                f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}"
            )
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError(
                f"expected integer labels, got pred {pred.dtype} and target {target.dtype}"
            )
        valid = target != self.ignore_index
        target = target[valid].to(torch.int64)
        pred = pred[valid].to(torch.int64)
        self._check_range(target, "target")
        self._check_range(pred, "pred")
        counts = torch.bincount(target * self.num_classes + pred, minlength=self.num_classes**2)
        if self._matrix.device != counts.device:
            self._matrix = self._matrix.to(counts.device)
        self._matrix += counts.view(self.num_classes, self.num_classes)

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add ``other``'s counts into this matrix (e.g. across processes or splits)."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, ignore_index="
                f"{other.ignore_index}) into ConfusionMatrix(num_classes={self.num_classes}, "
                f"ignore_index={self.ignore_index})"
            )
        self._matrix = self._matrix + other.matrix.to(self._matrix.device)
        return self

    def __iadd__(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        return self.merge(other)

    def compute(self) -> dict:
        """Scores: ``pixel_acc``, ``mean_acc``, ``miou``, ``fwiou`` (floats), ``iou``, ``acc``."""
        m = self._matrix.detach().cpu().to(torch.float64)
        tp = m.diag()
        target_count = m.sum(dim=1)
        union = target_count + m.sum(dim=0) - tp
        total = float(m.sum())
        nan = torch.full_like(tp, math.nan)
        iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
        acc = torch.where(target_count > 0, tp / target_count.clamp(min=1), nan)
        has_iou = ~iou.isnan()
        if total > 0:
            freq = target_count / total
            fwiou = float((freq[has_iou] * iou[has_iou]).sum())
            pixel_acc = float(tp.sum()) / total
        else:
            fwiou = pixel_acc = math.nan
        return {
            "pixel_acc": pixel_acc,
            "mean_acc": _nanmean(acc),
            "miou": _nanmean(iou),
            "fwiou": fwiou,
            "iou": iou.tolist(),
            "acc": acc.tolist(),
        }


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else math.nan
