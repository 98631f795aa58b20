"""A user's own segmentation data in a plain folder layout.

::

    root/classes.txt                  class names, one per line (blank lines ignored)
    root/images/<split>/*.png|jpg     images
    root/masks/<split>/<stem>.png     class index per pixel: mode L or I, or a palette PNG
                                      (the palette index is the class, never the colour)

``<split>`` is ``train``, ``val`` or ``test``. Mask values are ``0..len(classes) - 1`` or the
ignore index (255 unless set otherwise); anything else stops with an error naming the file. A
``test`` split without ``masks/test/`` has no labels: its masks are all ignore.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from autodeeplab.data.base import (
    DatasetError,
    PairedSegmentation,
    identity_lut,
    list_images,
    paired_by_stem,
    require_dir,
)
from autodeeplab.data.registry import register_dataset

CLASSES_FILE = "classes.txt"
MAX_LABEL = 65535  # the largest value a 16-bit label PNG can store


def read_classes(path: Path) -> list[str]:
    """Class names from ``path``, one per line; blank lines and surrounding spaces ignored."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing class list (one class name per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read class list ({err})") from None
    classes = [line.strip() for line in text.splitlines() if line.strip()]
    if not classes:
        raise DatasetError(f"{path}: the class list is empty")
    duplicates = sorted(name for name, n in Counter(classes).items() if n > 1)
    if duplicates:
        raise DatasetError(f"{path}: class names listed more than once: {duplicates}")
    return classes


def _unique_stems(images: list[Path]) -> None:
    """Two images sharing a stem (``a.png`` and ``a.jpg``) would share one mask file."""
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise DatasetError(
                f"{image}: same name as {seen[image.stem].name}; each mask pairs with one image"
            )
        seen[image.stem] = image


@register_dataset("folder")
def build_folder(
    root: str | os.PathLike | None,
    split: str,
    transform=None,
    *,
    ignore_index: int = 255,
    scale: float = 1.0,
) -> PairedSegmentation:
    """The ``split`` of the folder dataset at ``root``; ``ignore_index`` is the mask value of
    unlabelled pixels, ``scale`` (0 < scale <= 1) resizes images and masks."""
    if root is None:
        raise DatasetError("folder: data.root is not set; pass data.root=<your dataset folder>")
    base = require_dir(Path(root), "the dataset folder holding classes.txt, images/, masks/")
    classes = read_classes(base / CLASSES_FILE)
    if ignore_index < len(classes):
        # Negative values are the lookup table's error marker; smaller ones would be a class.
        raise DatasetError(
            f"folder: ignore_index={ignore_index} is a class index; {base / CLASSES_FILE} lists "
            f"{len(classes)} classes, so expected ignore_index >= {len(classes)}"
        )
    if ignore_index > MAX_LABEL:
        raise DatasetError(f"folder: ignore_index={ignore_index}; expected at most {MAX_LABEL}")
    images_dir = require_dir(base / "images" / split, f"images of split {split!r}")
    unlabelled = split == "test" and not (base / "masks" / split).exists()
    if not unlabelled:
        masks_dir = require_dir(base / "masks" / split, f"masks of split {split!r}")
    images = list_images(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images (.png, .jpg, .jpeg) for split {split!r}")
    _unique_stems(images)
    pairs = [(image, None) for image in images] if unlabelled else paired_by_stem(images, masks_dir)
    # Mode I masks can hold values above 255, so the table covers every class and the ignore
    # value; larger stored values are reported as outside the table.
    size = max(256, len(classes), ignore_index + 1)
    return PairedSegmentation(
        pairs,
        classes=classes,
        lut=identity_lut(len(classes), ignore_index, size=size),
        name="folder",
        split=split,
        ignore_index=ignore_index,
        scale=scale,
        transform=transform,
    )
