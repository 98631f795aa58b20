"""Cityscapes semantic segmentation in its official layout, mapped to the 19 train classes.

Layout (as extracted from the official archives)::

    root/leftImg8bit/{train,val,test,train_extra}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
    root/gtCoarse/{train,val,train_extra}/<city>/<city>_<seq>_<frame>_gtCoarse_labelIds.png

The ``*_labelIds.png`` files store the label ids 0..33 of :data:`LABELS`; items carry the train
ids 0..18 with 255 for every label the benchmark ignores. The paper searches on half-resolution
images (512x1024, ``half_resolution=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from autodeeplab.data.base import (
    DatasetError,
    PairedSegmentation,
    paired_by_stem,
    require_dir,
)
from autodeeplab.data.registry import SPLITS, register_dataset

IGNORE_INDEX = 255

# (name, id, trainId) of cityscapesscripts/helpers/labels.py, the official definition. The label
# files store `id`; `trainId` 255 (and -1 for the license plate, which has no id of its own in
# the label files) is ignored in training and evaluation.
LABELS: tuple[tuple[str, int, int], ...] = (
    ("unlabeled", 0, 255),
    ("ego vehicle", 1, 255),
    ("rectification border", 2, 255),
    ("out of roi", 3, 255),
    ("static", 4, 255),
    ("dynamic", 5, 255),
    ("ground", 6, 255),
    ("road", 7, 0),
    ("sidewalk", 8, 1),
    ("parking", 9, 255),
    ("rail track", 10, 255),
    ("building", 11, 2),
    ("wall", 12, 3),
    ("fence", 13, 4),
    ("guard rail", 14, 255),
    ("bridge", 15, 255),
    ("tunnel", 16, 255),
    ("pole", 17, 5),
    ("polegroup", 18, 255),
    ("traffic light", 19, 6),
    ("traffic sign", 20, 7),
    ("vegetation", 21, 8),
    ("terrain", 22, 9),
    ("sky", 23, 10),
    ("person", 24, 11),
    ("rider", 25, 12),
    ("car", 26, 13),
    ("truck", 27, 14),
    ("bus", 28, 15),
    ("caravan", 29, 255),
    ("trailer", 30, 255),
    ("train", 31, 16),
    ("motorcycle", 32, 17),
    ("bicycle", 33, 18),
    ("license plate", -1, -1),
)

NUM_CLASSES = 19

# The 19 evaluated classes in train-id order.
CLASSES: tuple[str, ...] = tuple(
    name
    for name, _, train_id in sorted(LABELS, key=lambda row: row[2])
    if 0 <= train_id < NUM_CLASSES
)

_IMAGE_TAG = "_leftImg8bit"


def label_lut(ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Lookup table ``(256,)`` int64 from stored label id to train id (``ignore_index`` for the
    ignored labels, -1 for values that are no label id)."""
    lut = np.full(256, -1, dtype=np.int64)
    for _, label_id, train_id in LABELS:
        if label_id >= 0:
            lut[label_id] = train_id if 0 <= train_id < NUM_CLASSES else ignore_index
    # A stored ignore value is accepted as such (masks prepared by other tools use it).
    lut[ignore_index] = ignore_index
    return lut


def _mask_stem(kind: str) -> Callable[[str], str]:
    """``<city>_<seq>_<frame>_leftImg8bit`` -> ``<city>_<seq>_<frame>_<kind>_labelIds``."""

    def stem(image_stem: str) -> str:
        return image_stem[: -len(_IMAGE_TAG)] + f"_{kind}_labelIds"

    return stem


def _pairs(images_dir: Path, labels_dir: Path | None, kind: str) -> list[tuple[Path, Path | None]]:
    """Image/label pairs of one image folder (all its cities); labels ``None`` when
    ``labels_dir`` is None."""
    pairs: list[tuple[Path, Path | None]] = []
    for city in sorted(d for d in images_dir.iterdir() if d.is_dir()):
        images = sorted(city.glob(f"*{_IMAGE_TAG}.png"))
        if labels_dir is None:
            pairs.extend((image, None) for image in images)
        elif images:
            labels_city = labels_dir / city.name
            pairs.extend(paired_by_stem(images, labels_city, mask_stem=_mask_stem(kind)))
    if not pairs:
        raise DatasetError(f"{images_dir}: no <city>/*{_IMAGE_TAG}.png images")
    return pairs


@register_dataset("cityscapes")
def build_cityscapes(
    root: str | Path | None,
    split: str,
    transform: Callable | None = None,
    *,
    half_resolution: bool = False,
    coarse: bool = False,
) -> PairedSegmentation:
    """Cityscapes ``split``: items ``(image (3, H, W) float32, mask (H, W) int64)`` with
    H x W = 1024 x 2048, or 512 x 1024 with ``half_resolution``.

    ``coarse`` adds the ``leftImg8bit/train_extra`` images with their ``gtCoarse/`` labels to
    train (val and test keep the fine labels). The test split's labels are dummies: they are
    used when ``gtFine/test`` exists, otherwise its masks are all ignore.
    """
    if root is None:
        raise DatasetError("cityscapes needs root: the folder holding leftImg8bit/ and gtFine/")
    if split not in SPLITS:
        raise DatasetError(f"cityscapes: unknown split {split!r}; expected one of {SPLITS}")
    root = require_dir(Path(root), "Cityscapes root")
    images_root = require_dir(root / "leftImg8bit", "Cityscapes images")
    labels_root = root / "gtFine"
    images_dir = require_dir(images_root / split, f"Cityscapes {split} images")
    if split == "test":
        labels_dir = labels_root / split if (labels_root / split).is_dir() else None
    else:
        labels_dir = require_dir(labels_root / split, f"Cityscapes {split} labels (gtFine)")
    pairs = _pairs(images_dir, labels_dir, "gtFine")
    if coarse and split == "train":
        # The coarse set adds train_extra with its coarse labels; val stays finely labelled so
        # that mIoU is measured as usual.
        coarse_root = require_dir(root / "gtCoarse", "Cityscapes coarse labels, for coarse=True")
        extra = require_dir(images_root / "train_extra", "train_extra images, for coarse=True")
        extra_labels = require_dir(coarse_root / "train_extra", "coarse labels of train_extra")
        pairs += _pairs(extra, extra_labels, "gtCoarse")
    return PairedSegmentation(
        pairs,
        classes=CLASSES,
        lut=label_lut(),
        name="cityscapes",
        split=split,
        ignore_index=IGNORE_INDEX,
        scale=0.5 if half_resolution else 1.0,
        transform=transform,
    )
