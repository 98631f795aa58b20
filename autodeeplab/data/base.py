"""Datasets stored as image files paired with label files: reading, label mapping, validation.

Every on-disk dataset (Cityscapes, VOC, ADE20K, a user's folder) is a list of (image, mask)
file pairs plus a lookup table from the values stored in the mask files to train ids. This module
reads them and stops with a :class:`DatasetError` that names the file and the problem (a missing
mask, a size mismatch, a label outside the classes, an unreadable file) instead of a tensor-shape
error later in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A dataset whose files are missing, unreadable or inconsistent."""


#: Grey modes of 16-bit images (Pillow opens 16-bit grey PNGs as one of them; ``I`` also
#: holds 32-bit integers, which are refused when they exceed 16 bits).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_EXIF_ORIENTATION = 0x0112


def read_image(path: Path) -> torch.Tensor:
    """An image file as float32 RGB ``(3, H, W)`` in [0, 1], upright as its EXIF orientation
    says (as photo viewers and annotation tools show it; a mask file is read as stored). Grey
    images are repeated over the three channels; 16-bit grey ones are scaled by 1/65535
    (converting them to 8 bits would clip every value above 255 to white)."""
    try:
        with Image.open(path) as image:
            if image.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)  # a copy: only where it turns
            if image.mode in _SIXTEEN_BIT_MODES:
                grey = np.asarray(image, dtype=np.int64)
                if grey.size and (grey.min() < 0 or grey.max() > 65535):
                    raise DatasetError(
                        f"{path}: a {image.mode!r} image with values from {grey.min()} to "
                        f"{grey.max()}; expected 8-bit or 16-bit pixel values"
                    )
                tensor = torch.from_numpy(grey.astype(np.float32) / 65535.0)
                return tensor.unsqueeze(0).expand(3, -1, -1).contiguous()
            if image.mode == "F":
                raise DatasetError(
                    f"{path}: a floating-point image (mode 'F'); expected 8-bit or 16-bit pixel "
                    "values"
                )
            array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def read_mask(path: Path) -> np.ndarray:
    """A label file as an integer array ``(H, W)``: the stored values (palette indices for
    palette PNGs, never the palette's colours)."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L", "I", "I;16", "1"):
                raise DatasetError(
                    f"{path}: label image has mode {image.mode!r}; expected one channel of class "
                    "indices (mode L, I or a palette PNG)"
                )
            return np.asarray(image, dtype=np.int64)
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"{path}: cannot read label file ({err})") from None


def identity_lut(num_classes: int, ignore_index: int = 255, size: int = 256) -> np.ndarray:
    """Lookup table keeping ``0..num_classes-1``, mapping ``ignore_index`` to itself and every
    other value to -1 (an error)."""
    lut = np.full(size, -1, dtype=np.int64)
    lut[:num_classes] = np.arange(num_classes)
    if 0 <= ignore_index < size:
        lut[ignore_index] = ignore_index
    return lut


class PairedSegmentation(Dataset):
    """Items ``(image (3, H, W) float32, mask (H, W) int64)``: the mask in train ids with
    ``ignore_index`` for ignored pixels.

    ``pairs``: image and label file per sample (label ``None`` for splits without labels, whose
    masks are all ``ignore_index``). ``lut[stored value]`` gives the train id (or the ignore
    index); -1 marks values that must not occur. ``scale`` resizes both (e.g. 0.5 for the
    half-resolution Cityscapes of the paper's search).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path | None]],
        *,
        classes: Sequence[str],
        lut: np.ndarray,
        name: str,
        split: str,
        ignore_index: int = 255,
        scale: float = 1.0,
        transform: Callable | None = None,
    ):
        if not pairs:
            raise DatasetError(f"{name} split {split!r} has no samples")
        if not 0 < scale <= 1:
            raise DatasetError(f"{name}: scale={scale}; expected 0 < scale <= 1")
        self.pairs = [(Path(i), None if m is None else Path(m)) for i, m in pairs]
        self.classes = list(classes)
        self.num_classes = len(self.classes)
        self.lut = np.asarray(lut, dtype=np.int64)
        self.name, self.split = name, split
        self.ignore_index = ignore_index
        self.scale = scale
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def read_raw_mask(self, path: Path) -> np.ndarray:
        """The stored label values of ``path``, ``(H, W)`` integers; datasets whose labels are
        not images (SBD's MATLAB files) override this."""
        return read_mask(path)

    def load_mask(self, index: int, size: tuple[int, int]) -> torch.Tensor:
        """The train-id mask of sample ``index`` (validated), ``(H, W)`` int64."""
        image_path, mask_path = self.pairs[index]
        if mask_path is None:
            return torch.full(size, self.ignore_index, dtype=torch.int64)
        raw = self.read_raw_mask(mask_path)
        if raw.shape != tuple(size):
            raise DatasetError(
                f"{mask_path}: label size (HxW) {raw.shape[0]}x{raw.shape[1]} differs from its "
                f"image {image_path} ({size[0]}x{size[1]})"
            )
        if raw.min() < 0 or raw.max() >= len(self.lut):
            bad = raw.max() if raw.max() >= len(self.lut) else raw.min()
            raise DatasetError(f"{mask_path}: label value {bad} is outside the label table")
        mask = self.lut[raw]
        if (mask < 0).any():
            bad = np.unique(raw[mask < 0])[:10].tolist()
            raise DatasetError(
                f"{mask_path}: label values {bad} are not classes of {self.name} "
                f"(0..{self.num_classes - 1}) nor the ignore value {self.ignore_index}"
            )
        return torch.from_numpy(mask)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = read_image(self.pairs[index][0])
        mask = self.load_mask(index, tuple(image.shape[-2:]))
        if self.scale != 1.0:
            size = [max(1, round(n * self.scale)) for n in image.shape[-2:]]
            image = F.interpolate(
                image[None], size=size, mode="bilinear", align_corners=False, antialias=True
            )[0]
            # nearest-exact: each label from the source pixel nearest the output pixel's centre,
            # which is where the bilinear image samples ("nearest" is up to 1/scale/2 off).
            mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")
            mask = mask[0, 0].long()
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask


def paired_by_stem(
    images: Sequence[Path],
    masks_dir: Path,
    mask_suffix: str = ".png",
    mask_stem: Callable[[str], str] = lambda s: s,
) -> list[tuple[Path, Path]]:
    """Pair each image with ``masks_dir / (mask_stem(image stem) + mask_suffix)``; a missing
    label file is an error naming the image."""
    pairs = []
    for image in images:
        mask = masks_dir / (mask_stem(image.stem) + mask_suffix)
        if not mask.is_file():
            raise DatasetError(f"{image}: no label file {mask}")
        pairs.append((image, mask))
    return pairs


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a directory, else an error saying what was expected there."""
    if not path.is_dir():
        raise DatasetError(f"{path}: missing directory ({what})")
    return path


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
