"""Load every sample of a dataset once and count what is in it.

Used by ``python -m autodeeplab.data check`` before a long search: a broken file stops the check
with a :class:`DatasetError` naming it, and the per-class pixel counts show class imbalance and
classes that never occur.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from autodeeplab.data.base import DatasetError


def _where(dataset: Dataset, index: int) -> str:
    """The image file of sample ``index`` where the dataset knows it, else its index."""
    pairs = getattr(dataset, "pairs", None)
    if pairs is not None:
        return str(pairs[index][0])
    return f"{getattr(dataset, 'name', type(dataset).__name__)} sample {index}"


def check_dataset(
    dataset: Dataset,
    progress: bool = True,
    *,
    max_samples: int | None = None,
    desc: str | None = None,
) -> dict[str, Any]:
    """Load samples ``0..n-1`` (all, or the first ``max_samples``) and count their pixels.

    Returns ``{"samples": checked, "total": len(dataset), "pixels": all mask pixels,
    "ignored": pixels equal to the ignore index, "class_pixels": [pixels of class c],
    "min_size": (h, w), "max_size": (h, w)}`` (sizes are elementwise over the samples).
    Raises :class:`DatasetError` on an item that is not ``(image (C, H, W), mask (H, W))`` of
    equal size or whose mask holds a value that is neither a class nor the ignore index.
    """
    num_classes = int(dataset.num_classes)
    ignore_index = int(getattr(dataset, "ignore_index", 255))
    total = len(dataset)
    n = total if max_samples is None else min(total, max_samples)
    class_pixels = torch.zeros(num_classes, dtype=torch.int64)
    pixels = ignored = 0
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    for index in tqdm(range(n), desc=desc, file=sys.stderr, disable=not progress, unit="img"):
        image, mask = dataset[index]
        if image.dim() != 3 or mask.dim() != 2 or tuple(image.shape[-2:]) != tuple(mask.shape):
            raise DatasetError(
                f"{_where(dataset, index)}: image {tuple(image.shape)} and mask "
                f"{tuple(mask.shape)} are not (C, H, W) and (H, W) of one size"
            )
        mask = mask.reshape(-1).long()
        is_ignored = mask == ignore_index
        labelled = mask[~is_ignored]
        bad = (labelled < 0) | (labelled >= num_classes)
        if bad.any():
            # Datasets built on PairedSegmentation never get here; others (synthetic or
            # third-party) are held to the same contract.
            values = torch.unique(labelled[bad])[:10].tolist()
            raise DatasetError(
                f"{_where(dataset, index)}: mask values {values} are neither classes "
                f"(0..{num_classes - 1}) nor the ignore index {ignore_index}"
            )
        class_pixels += torch.bincount(labelled, minlength=num_classes)
        pixels += mask.numel()
        ignored += int(is_ignored.sum())
        h, w = image.shape[-2:]
        min_size = (h, w) if min_size is None else (min(min_size[0], h), min(min_size[1], w))
        max_size = (h, w) if max_size is None else (max(max_size[0], h), max(max_size[1], w))
    return {
        "samples": n,
        "total": total,
        "pixels": pixels,
        "ignored": ignored,
        "class_pixels": class_pixels.tolist(),
        "min_size": min_size,
        "max_size": max_size,
    }


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:6.2f}%" if whole else "      -"


def _size(report: Mapping[str, Any]) -> str:
    low, high = report["min_size"], report["max_size"]
    if low is None:
        return "-"
    if low == high:
        return f"{low[0]}x{low[1]}"
    return f"{low[0]}x{low[1]} .. {high[0]}x{high[1]}"


def format_report(
    name: str, reports: Mapping[str, Mapping[str, Any]], classes: Sequence[str]
) -> str:
    """A plain-text summary of :func:`check_dataset` results per split: sample counts and image
    sizes, then pixels per class with their share of the split's labelled pixels, and the
    ignored pixels with their share of all pixels."""
    splits = list(reports)
    lines = [f"dataset {name}: {len(classes)} classes", ""]
    lines.append(f"{'split':<8}{'samples':>10}{'checked':>10}  image sizes (HxW)")
    for split in splits:
        r = reports[split]
        lines.append(f"{split:<8}{r['total']:>10}{r['samples']:>10}  {_size(r)}")

    width = max([len("class"), len("ignored"), *(len(c) for c in classes)])
    head = f"{'id':>4}  {'class':<{width}}"
    for split in splits:
        head += f"  {split + ' pixels':>14} {'share':>7}"
    lines += ["", head]
    labelled = {s: reports[s]["pixels"] - reports[s]["ignored"] for s in splits}
    for c, cls in enumerate(classes):
        row = f"{c:>4}  {cls:<{width}}"
        for split in splits:
            count = reports[split]["class_pixels"][c]
            row += f"  {count:>14} {_share(count, labelled[split])}"
        lines.append(row)
    row = f"{'':>4}  {'ignored':<{width}}"
    for split in splits:
        r = reports[split]
        row += f"  {r['ignored']:>14} {_share(r['ignored'], r['pixels'])}"
    lines.append(row)
    lines.append("(share: of the split's labelled pixels; for ignored, of all its pixels)")
    absent = [
        cls
        for c, cls in enumerate(classes)
        if all(reports[s]["class_pixels"][c] == 0 for s in splits)
    ]
    if absent and splits:
        lines += ["", f"classes with no pixels in {', '.join(splits)}: {', '.join(absent)}"]
    return "\n".join(lines)
