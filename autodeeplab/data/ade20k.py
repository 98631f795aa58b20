"""ADE20K in the MIT SceneParsing layout (``ADEChallengeData2016``).

::

    root/images/training/*.jpg        root/annotations/training/*.png      (split "train")
    root/images/validation/*.jpg      root/annotations/validation/*.png    (split "val")
    root/images/testing/*.jpg         (optional, no labels)                (split "test")

The test images come as a separate download (``release_test.zip``) that unpacks to
``release_test/testing/``: the test split reads ``root/images/testing/`` or, where that does not
exist, ``release_test/testing/`` beside ``root`` (or inside it).

Label files store 0 for "other" (ignored in the benchmark) and 1..150 for the classes; the
lookup table maps 0 to the ignore index and k to train id k - 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autodeeplab.data.base import (
    DatasetError,
    PairedSegmentation,
    list_images,
    paired_by_stem,
    require_dir,
)
from autodeeplab.data.registry import register_dataset

# The 150 SceneParsing classes in train-id order (the first name of each objectInfo150.csv row).
ADE20K_CLASSES: tuple[str, ...] = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass",
    "cabinet", "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain",
    "chair", "car", "water", "painting", "sofa", "shelf", "house", "sea", "mirror", "rug",
    "field", "armchair", "seat", "fence", "desk", "rock", "wardrobe", "lamp", "bathtub",
    "railing", "cushion", "base", "box", "column", "signboard", "chest of drawers", "counter",
    "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path", "stairs",
    "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
    "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench",
    "countertop", "stove", "palm", "kitchen island", "computer", "swivel chair", "boat", "bar",
    "arcade machine", "hovel", "bus", "towel", "light", "truck", "tower", "chandelier",
    "awning", "streetlight", "booth", "television receiver", "airplane", "dirt track",
    "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet",
    "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer",
    "plaything", "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag",
    "minibike", "cradle", "oven", "ball", "food", "step", "tank", "trade name", "microwave",
    "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture", "hood",
    "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate",
    "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip

NUM_CLASSES = 150  # len(ADE20K_CLASSES); tests/data/test_ade20k.py holds the list to it

# Our split names -> the folder names of the release.
SPLIT_DIRS = {"train": "training", "val": "validation", "test": "testing"}


def ade20k_lut(ignore_index: int = 255) -> np.ndarray:
    """Stored value -> train id: 0 -> ``ignore_index``, k -> k - 1 for k in 1..150, anything
    else -1 (an error: ADE20K label files hold only 0..150)."""
    lut = np.full(256, -1, dtype=np.int64)
    lut[0] = ignore_index
    lut[1 : NUM_CLASSES + 1] = np.arange(NUM_CLASSES)
    return lut


def _dataset_root(root: str | os.PathLike | None) -> Path:
    if root is None:
        raise DatasetError("ade20k: data.root is not set; pass data.root=<ADEChallengeData2016>")
    root = require_dir(Path(root), "the ADE20K root holding images/ and annotations/")
    nested = root / "ADEChallengeData2016"
    if not (root / "images").is_dir() and (nested / "images").is_dir():
        raise DatasetError(
            f"{root / 'images'}: missing directory; data.root is the ADEChallengeData2016 "
            f"folder itself: pass data.root={nested}"
        )
    return root


@register_dataset("ade20k")
def build_ade20k(
    root: str | os.PathLike | None,
    split: str,
    transform=None,
    *,
    ignore_index: int = 255,
    scale: float = 1.0,
) -> PairedSegmentation:
    """ADE20K (SceneParsing, 150 classes) for ``split``; the test split has no labels, so its
    masks are all ``ignore_index``. ``scale`` (0 < scale <= 1) resizes images and masks."""
    if ignore_index < NUM_CLASSES:
        # A value below 150 would merge "other" into a real class; negative values are the
        # lookup table's error marker.
        raise DatasetError(f"ade20k: ignore_index={ignore_index}; expected a value >= 150")
    base = _dataset_root(root)
    folder = SPLIT_DIRS.get(split)
    if folder is None:
        raise DatasetError(f"ade20k: unknown split {split!r}; expected one of {list(SPLIT_DIRS)}")
    images_dir = base / "images" / folder
    if split == "test":
        images_dir = _test_images(base)
    else:
        require_dir(images_dir, f"the ADE20K {folder} images")
    images = list_images(images_dir)
    if not images:
        raise DatasetError(f"{images_dir}: no images (.jpg, .jpeg, .png) for split {split!r}")
    if split == "test":
        pairs: list[tuple[Path, Path | None]] = [(image, None) for image in images]
    else:
        masks_dir = require_dir(base / "annotations" / folder, f"the ADE20K {folder} labels")
        pairs = list(paired_by_stem(images, masks_dir))
    return PairedSegmentation(
        pairs,
        classes=ADE20K_CLASSES,
        lut=ade20k_lut(ignore_index),
        name="ade20k",
        split=split,
        ignore_index=ignore_index,
        scale=scale,
        transform=transform,
    )


def _test_images(base: Path) -> Path:
    """The folder of the unlabelled test images: ``images/testing`` in the release's layout, else
    the separate download's ``release_test/testing`` beside the release folder or in it."""
    candidates = [
        base / "images" / "testing",
        base.parent / "release_test" / "testing",
        base / "release_test" / "testing",
    ]
    for folder in candidates:
        if folder.is_dir():
            return folder
    raise DatasetError(
        f"{candidates[0]}: missing directory (the unlabelled ADE20K test images, a separate "
        f"download, release_test.zip: unpack it beside {base.name}, as {candidates[1]}, or "
        f"move its testing/ folder to {candidates[0]})"
    )
