"""PASCAL VOC 2012 semantic segmentation, optionally with the SBD-augmented training set.

Layout (``root`` is ``VOCdevkit/VOC2012``)::

    root/JPEGImages/<id>.jpg
    root/SegmentationClass/<id>.png            palette PNGs: the palette index is the class
    root/ImageSets/Segmentation/{train,val,test}.txt
    root/SegmentationClassAug/<id>.png         augmented labels (index PNGs), with
    root/ImageSets/Segmentation/train_aug.txt  the list of the augmented training set
    sbd_root/dataset/{train,val}.txt, sbd_root/dataset/cls/<id>.mat   SBD (benchmark_RELEASE)

Labels are 0 (background) .. 20 with 255 on object boundaries and "difficult" regions (ignored).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.io import loadmat

from autodeeplab.data.base import (
    DatasetError,
    PairedSegmentation,
    identity_lut,
    require_dir,
)
from autodeeplab.data.registry import SPLITS, register_dataset

IGNORE_INDEX = 255

CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

LIST_DIR = Path("ImageSets", "Segmentation")
AUG_LIST = "train_aug.txt"
AUG_LABELS = "SegmentationClassAug"


def read_sbd_mat(path: Path) -> np.ndarray:
    """The class map ``GTcls.Segmentation`` of an SBD ``cls/<id>.mat`` file, ``(H, W)`` int64."""
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    # scipy's parser fails on damaged files with many exception types (IndexError for junk
    # bytes, OSError when truncated, MatReadError, ValueError), so any of them means unreadable.
    except Exception as err:
        raise DatasetError(f"{path}: cannot read SBD label file ({err!r})") from None
    try:
        seg = np.asarray(mat["GTcls"].Segmentation)
    except (KeyError, AttributeError):
        raise DatasetError(f"{path}: no GTcls.Segmentation in this SBD label file") from None
    if seg.ndim != 2 or not np.issubdtype(seg.dtype, np.integer):
        raise DatasetError(
            f"{path}: GTcls.Segmentation is {seg.dtype} {seg.shape}; expected a 2-D class map"
        )
    return seg.astype(np.int64)


class VOCSegmentation(PairedSegmentation):
    """:class:`PairedSegmentation` whose label files may also be SBD ``.mat`` files."""

    def read_raw_mask(self, path: Path) -> np.ndarray:
        if path.suffix == ".mat":
            return read_sbd_mat(path)
        return super().read_raw_mask(path)


def read_ids(list_file: Path) -> list[str]:
    """Image ids of a list file. A line is either ``<id>`` or (the common ``train_aug.txt``)
    ``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``: the first entry's stem is the id."""
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: missing list file")
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{list_file}: cannot read list file ({err})") from None
    ids = [Path(line.split()[0]).stem for line in lines if line.strip()]
    if not ids:
        raise DatasetError(f"{list_file}: empty list file (no image ids)")
    return ids


def _image(root: Path, image_id: str, fallback: Path | None = None) -> Path:
    """``root/JPEGImages/<id>.jpg``, else ``fallback/<id>.jpg`` (SBD's own copy)."""
    path = root / "JPEGImages" / f"{image_id}.jpg"
    if not path.is_file() and fallback is not None and (fallback / f"{image_id}.jpg").is_file():
        return fallback / f"{image_id}.jpg"
    if not path.is_file():
        raise DatasetError(f"{path}: missing image (id {image_id!r})")
    return path


def _listed_pairs(
    root: Path, list_file: Path, *, labels_required: bool
) -> list[tuple[Path, Path | None]]:
    """Pairs of a VOC list with ``SegmentationClass`` labels. Without ``labels_required`` (the
    test split) a list whose images all lack labels gets ``None`` labels (ignore masks)."""
    ids = read_ids(list_file)
    images = [_image(root, i) for i in ids]
    masks = [root / "SegmentationClass" / f"{i}.png" for i in ids]
    found = [m.is_file() for m in masks]
    if not labels_required and not any(found):
        return [(image, None) for image in images]
    for image, mask, ok in zip(images, masks, found):
        if not ok:
            raise DatasetError(f"{image}: no label file {mask}")
    return list(zip(images, masks))


def _aug_from_list(root: Path, list_file: Path) -> list[tuple[Path, Path | None]]:
    """train_aug from a prepared list and ``SegmentationClassAug``; VOC train is included even
    if the list lacks it, and VOC val must not be in it (it is what the search evaluates on)."""
    aug_labels = require_dir(root / AUG_LABELS, f"labels of {list_file.name}")
    ids = sorted(set(read_ids(list_file)) | set(read_ids(root / LIST_DIR / "train.txt")))
    leaked = sorted(set(ids) & set(read_ids(root / LIST_DIR / "val.txt")))
    if leaked:
        raise DatasetError(
            f"{list_file}: lists {len(leaked)} images of val.txt (e.g. {leaked[0]}); the "
            "augmented training set must exclude the validation images"
        )
    pairs: list[tuple[Path, Path | None]] = []
    for image_id in ids:
        image = _image(root, image_id)
        mask = aug_labels / f"{image_id}.png"
        if not mask.is_file():
            # VOC train images missing from SegmentationClassAug keep their VOC labels.
            mask = root / "SegmentationClass" / f"{image_id}.png"
        if not mask.is_file():
            raise DatasetError(f"{image}: no label file {aug_labels / f'{image_id}.png'}")
        pairs.append((image, mask))
    return pairs


def _aug_from_sbd(root: Path, sbd: Path) -> list[tuple[Path, Path | None]]:
    """train_aug = (SBD train | SBD val | VOC train) - VOC val (10,582 images for the full
    sets): VOC's own labels where it has them, else SBD's ``cls/<id>.mat``."""
    ids = set(read_ids(sbd / "train.txt")) | set(read_ids(sbd / "val.txt"))
    ids |= set(read_ids(root / LIST_DIR / "train.txt"))
    ids -= set(read_ids(root / LIST_DIR / "val.txt"))
    pairs: list[tuple[Path, Path | None]] = []
    for image_id in sorted(ids):
        image = _image(root, image_id, fallback=sbd / "img")
        voc_mask = root / "SegmentationClass" / f"{image_id}.png"
        sbd_mask = sbd / "cls" / f"{image_id}.mat"
        if voc_mask.is_file():
            pairs.append((image, voc_mask))
        elif sbd_mask.is_file():
            pairs.append((image, sbd_mask))
        else:
            raise DatasetError(f"{image}: no label file {sbd_mask} (nor {voc_mask})")
    return pairs


def _train_aug(root: Path, sbd_root: Path) -> list[tuple[Path, Path | None]]:
    """The SBD-augmented training set: from ``train_aug.txt`` if present, else built from SBD."""
    list_file = root / LIST_DIR / AUG_LIST
    if list_file.is_file():
        return _aug_from_list(root, list_file)
    sbd = sbd_root / "dataset"
    needed = [sbd / "train.txt", sbd / "val.txt", sbd / "cls"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise DatasetError(
            f"{list_file}: missing, and the SBD files to build it are missing too: "
            f"{', '.join(missing)} (augmented=True; set sbd_root to the SBD folder "
            "benchmark_RELEASE)"
        )
    return _aug_from_sbd(root, sbd)


@register_dataset("voc")
def build_voc(
    root: str | Path | None,
    split: str,
    transform: Callable | None = None,
    *,
    augmented: bool = False,
    sbd_root: str | Path | None = None,
) -> VOCSegmentation:
    """VOC 2012 ``split`` (train.txt, val.txt, test.txt): items ``(image (3, H, W) float32,
    mask (H, W) int64)``, images of up to 500 x 500 pixels in their own sizes.

    ``augmented`` replaces train by the SBD-augmented ``train_aug`` set; ``sbd_root`` is the
    SBD folder (default ``root/benchmark_RELEASE``), read only when ``train_aug.txt`` is absent.
    The test split without labels has masks of ignore.
    """
    if root is None:
        raise DatasetError("voc needs root: the VOC2012 folder holding JPEGImages/")
    if split not in SPLITS:
        raise DatasetError(f"voc: unknown split {split!r}; expected one of {SPLITS}")
    root = require_dir(Path(root), "VOC 2012 root")
    nested = next(
        (
            candidate
            for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012")
            if (candidate / "JPEGImages").is_dir()
        ),
        None,
    )
    if not (root / "JPEGImages").is_dir() and nested is not None:
        raise DatasetError(
            f"{root / 'JPEGImages'}: missing directory (VOC images); data.root is the VOC2012 "
            f"folder itself: pass data.root={nested}"
        )
    require_dir(root / "JPEGImages", "VOC images")
    if augmented and split == "train":
        sbd = Path(sbd_root) if sbd_root is not None else root / "benchmark_RELEASE"
        pairs = _train_aug(root, sbd)
    else:
        list_file = root / LIST_DIR / f"{split}.txt"
        pairs = _listed_pairs(root, list_file, labels_required=split != "test")
    return VOCSegmentation(
        pairs,
        classes=CLASSES,
        lut=identity_lut(len(CLASSES), IGNORE_INDEX),
        name="voc",
        split=split,
        ignore_index=IGNORE_INDEX,
        transform=transform,
    )
