"""Synthetic texture-mosaic segmentation built from photos that ship with scikit-image.

Each sample partitions the image into 2-5 Voronoi cells with slightly wavy borders and fills
every cell with a crop of one texture photo; the mask holds the texture index per pixel. Nothing
is downloaded, and every item is a pure function of ``(seed, split, index)``.
"""

from functools import lru_cache

import numpy as np
import skimage.data
import torch
from skimage.transform import resize
from torch.utils.data import Dataset

from autodeeplab.data.registry import DATASETS, SPLITS, register_dataset

# Grayscale photos first, so small `num_classes` values give a pure texture (not colour) task.
TEXTURES: list[str] = [
    "brick",
    "grass",
    "gravel",
    "moon",
    "immunohistochemistry",
    "hubble_deep_field",
    "coffee",
    "retina",
]

# The retina fundus sits in a black disc; keep only its inner square so crops are never black.
_CENTER_FRACTION = {"retina": 0.62}

_DEFAULT_NUM_SAMPLES = {"train": 200, "val": 50, "test": 50}
_SPLIT_IDS = {name: i for i, name in enumerate(SPLITS)}

# Texture photos are shrunk to TEXTURE_SCALE * image_size on their short side, so a 64 px sample
# sees textures at 256 px (half of the 512 px originals) and the look is resolution-independent.
TEXTURE_SCALE = 4


@lru_cache(maxsize=4)
def _texture_bank(short_side: int) -> tuple[np.ndarray, ...]:
    """Texture photos as float32 (3, h, w) arrays in [0, 1] with ``min(h, w) == short_side``."""
    bank = []
    for name in TEXTURES:
        photo = getattr(skimage.data, name)()
        if photo.ndim == 2:
            photo = np.repeat(photo[:, :, None], 3, axis=2)
        frac = _CENTER_FRACTION.get(name)
        if frac is not None:
            h, w = photo.shape[:2]
            ch, cw = int(h * frac), int(w * frac)
            photo = photo[(h - ch) // 2 : (h + ch) // 2, (w - cw) // 2 : (w + cw) // 2]
        h, w = photo.shape[:2]
        scale = short_side / min(h, w)
        out_shape = (max(short_side, round(h * scale)), max(short_side, round(w * scale)))
        small = resize(photo, out_shape, order=1, anti_aliasing=True, preserve_range=True)
        arr = np.clip(small / 255.0, 0.0, 1.0).astype(np.float32).transpose(2, 0, 1)
        bank.append(np.ascontiguousarray(arr))
    return tuple(bank)


def _region_map(rng: np.random.Generator, size: int, num_regions: int) -> np.ndarray:
    """Voronoi partition (size, size) int64 of ``num_regions`` random seeds, wavy borders."""
    seeds = rng.uniform(0.0, size, (num_regions, 2))
    yy, xx = np.meshgrid(
        np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij"
    )
    # Displacing the sampling grid by a low-frequency sine bends the straight Voronoi borders.
    amp = rng.uniform(0.0, 0.05 * size)
    freq = rng.uniform(1.0, 3.0, 2) * 2.0 * np.pi / size
    phase = rng.uniform(0.0, 2.0 * np.pi, 2)
    wy = yy + amp * np.sin(freq[0] * xx + phase[0])
    wx = xx + amp * np.sin(freq[1] * yy + phase[1])
    dist = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2
    return np.argmin(dist, axis=0)


def _random_crop(rng: np.random.Generator, texture: np.ndarray, size: int) -> np.ndarray:
    """(3, size, size) crop at a random position with a random flip and 90-degree rotation."""
    _, h, w = texture.shape
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    crop = texture[:, top : top + size, left : left + size]
    crop = np.rot90(crop, k=int(rng.integers(0, 4)), axes=(1, 2))
    if rng.random() < 0.5:
        crop = crop[:, :, ::-1]
    return crop


def make_sample(
    seed: int, split: str, index: int, *, image_size: int = 64, num_classes: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Generate sample ``index`` of ``split``: image (3, S, S) float32, mask (S, S) int64."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], index]))
    bank = _texture_bank(TEXTURE_SCALE * image_size)
    num_regions = int(rng.integers(2, 6))
    regions = _region_map(rng, image_size, num_regions)
    # The first two cells get distinct textures so (almost) every image has two classes;
    # a cell can only vanish when the wavy warp swallows a very close seed point.
    first_two = rng.choice(num_classes, size=2, replace=False)
    rest = rng.integers(0, num_classes, size=num_regions - 2)
    region_class = np.concatenate([first_two, rest]).astype(np.int64)
    crops = np.stack([_random_crop(rng, bank[c], image_size) for c in region_class])
    image = np.take_along_axis(crops, regions[None, None], axis=0)[0]
    mask = region_class[regions]
    return np.ascontiguousarray(image, dtype=np.float32), mask


class TextureSegmentation(Dataset):
    """Texture-mosaic segmentation; items are (image (3, S, S) float32 in [0, 1], mask (S, S))."""

    ignore_index = 255

    def __init__(
        self,
        split: str = "train",
        *,
        num_samples: int | None = None,
        image_size: int = 64,
        num_classes: int = 5,
        seed: int = 0,
        transform=None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if not 2 <= num_classes <= len(TEXTURES):
            raise ValueError(
                f"num_classes={num_classes} out of range; the texture dataset has "
                f"{len(TEXTURES)} textures, so expected 2 <= num_classes <= {len(TEXTURES)}"
            )
        if num_samples is None:
            num_samples = _DEFAULT_NUM_SAMPLES[split]
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}; expected at least 1")
        if image_size < 8:
            raise ValueError(f"image_size={image_size}; expected at least 8 pixels")
        if seed < 0:
            raise ValueError(f"seed={seed}; expected a non-negative integer")
        self.split = split
        self.num_samples = int(num_samples)
        self.image_size = int(image_size)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.transform = transform
        self.classes = TEXTURES[:num_classes]

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        image, mask = make_sample(
            self.seed,
            self.split,
            int(index),
            image_size=self.image_size,
            num_classes=self.num_classes,
        )
        image_t, mask_t = torch.from_numpy(image), torch.from_numpy(mask)
        if self.transform is not None:
            return self.transform(image_t, mask_t)
        return image_t, mask_t


@register_dataset("textures")
def build_textures(
    root,
    split: str,
    transform=None,
    *,
    num_samples: int | None = None,
    image_size: int = 64,
    num_classes: int = 5,
    seed: int = 0,
) -> TextureSegmentation:
    """Registry builder for :class:`TextureSegmentation`. The data is generated in memory, so
    ``root`` must be None: a root given with this dataset is most likely meant for another one
    (``data.root=...`` without ``data=<name>``), and ignoring it would train on textures."""
    if root is not None:
        others = ", ".join(sorted(set(DATASETS) - {"textures"}))
        raise ValueError(
            f"data.root={root} is set, but data=textures is generated in memory and reads no "
            f"files; choose the dataset of that folder with data=<{others}>, or leave data.root "
            "unset for the textures"
        )
    return TextureSegmentation(
        split,
        num_samples=num_samples,
        image_size=image_size,
        num_classes=num_classes,
        seed=seed,
        transform=transform,
    )
