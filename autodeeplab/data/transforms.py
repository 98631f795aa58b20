"""Joint image + mask transforms on tensors.

Every transform is a callable ``t(image, mask, generator=None) -> (image, mask)`` with image a
float tensor (C, H, W) and mask an int64 tensor (H, W). All randomness is drawn from
``generator`` so that a seeded generator reproduces the exact augmentation.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Transform = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _check(image: torch.Tensor, mask: torch.Tensor) -> None:
    if image.dim() != 3 or mask.dim() != 2 or image.shape[1:] != mask.shape:
        raise ValueError(
            f"expected image (C, H, W) and mask (H, W) of equal size, got image "
            f"{tuple(image.shape)} and mask {tuple(mask.shape)}"
        )


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _pair(size: int | Sequence[int], what: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(int(s) < 1 for s in pair):
        raise ValueError(f"{what} must be a positive int or (h, w), got {size!r}")
    return int(pair[0]), int(pair[1])


class Compose:
    """Apply transforms in order, sharing one generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for t in self.transforms:
            image, mask = t(image, mask, generator)
        return image, mask

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"


class RandomScale:
    """Resize by a factor drawn uniformly from [min_scale, max_scale] (bilinear / nearest)."""

    def __init__(self, min_scale: float, max_scale: float) -> None:
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"expected 0 < min_scale <= max_scale, got min_scale={min_scale}, "
                f"max_scale={max_scale}"
            )
        self.min_scale = float(min_scale)
        self.max_scale = float(max_scale)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(image, mask)
        scale = _uniform(self.min_scale, self.max_scale, generator)
        h, w = mask.shape
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if size == (h, w):
            return image, mask
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        # Labels must never be blended, so the mask goes through nearest-neighbour on floats
        # (exact for label values far below 2**24).
        mask = F.interpolate(mask[None, None].float(), size=size, mode="nearest-exact")[0, 0]
        return image, mask.to(torch.int64)

    def __repr__(self) -> str:
        return f"RandomScale({self.min_scale}, {self.max_scale})"


class RandomCrop:
    """Crop (h, w) at a random position; pad bottom/right first (image ``fill``, one value or
    one per channel; mask ignore)."""

    def __init__(
        self,
        size: int | Sequence[int],
        ignore_index: int = 255,
        fill: float | Sequence[float] = 0.0,
    ) -> None:
        self.size = _pair(size, "crop size")
        self.ignore_index = int(ignore_index)
        self.fill = (float(fill),) if isinstance(fill, (int, float)) else tuple(map(float, fill))

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(image, mask)
        ch, cw = self.size
        h, w = mask.shape
        pad_h, pad_w = max(0, ch - h), max(0, cw - w)
        if pad_h or pad_w:
            # Padded pixels are not real data: the mask marks them as ignored for the loss.
            padded = image.new_empty(image.shape[0], h + pad_h, w + pad_w)
            padded.copy_(torch.tensor(self.fill, dtype=image.dtype).view(-1, 1, 1))
            padded[:, :h, :w] = image
            image = padded
            mask = F.pad(mask, (0, pad_w, 0, pad_h), value=self.ignore_index)
            h, w = mask.shape
        top = int(torch.randint(0, h - ch + 1, (), generator=generator))
        left = int(torch.randint(0, w - cw + 1, (), generator=generator))
        return image[:, top : top + ch, left : left + cw], mask[top : top + ch, left : left + cw]

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, ignore_index={self.ignore_index}, fill={self.fill})"


class RandomHorizontalFlip:
    """Mirror image and mask left-right with probability ``p``."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability p={p}; expected 0 <= p <= 1")
        self.p = float(p)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(image, mask)
        # Always draw, so the generator advances identically whatever p is.
        if float(torch.rand((), generator=generator)) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image, mask

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class ColorJitter:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x]; output in [0, 1]."""

    def __init__(
        self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0
    ) -> None:
        for key, value in (
            ("brightness", brightness),
            ("contrast", contrast),
            ("saturation", saturation),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ColorJitter {key}={value}; expected a value in [0, 1]")
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(image, mask)
        b = _uniform(1 - self.brightness, 1 + self.brightness, generator)
        c = _uniform(1 - self.contrast, 1 + self.contrast, generator)
        s = _uniform(1 - self.saturation, 1 + self.saturation, generator)
        image = (image * b).clamp(0, 1)
        image = ((image - image.mean()) * c + image.mean()).clamp(0, 1)
        if image.shape[0] == 3:
            weights = image.new_tensor([0.299, 0.587, 0.114])[:, None, None]
            gray = (image * weights).sum(0, keepdim=True)
            image = ((image - gray) * s + gray).clamp(0, 1)
        return image, mask

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation})"


class Normalize:
    """Per-channel ``(image - mean) / std``; the mask is unchanged."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(
                f"Normalize needs equal-length mean and positive std, got {mean}, {std}"
            )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        _check(image, mask)
        if image.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channels but image has shape {tuple(image.shape)}"
            )
        mean = image.new_tensor(self.mean)[:, None, None]
        std = image.new_tensor(self.std)[:, None, None]
        return (image - mean) / std, mask

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def search_transform(
    crop_size: int,
    *,
    scale: tuple[float, float] = (1.0, 1.0),
    flip: bool = True,
    ignore_index: int = 255,
) -> Compose:
    """Supernet search augmentation: random scale, random crop, flip, ImageNet normalisation.
    A crop larger than the image pads it with the mean colour (0 once normalised, as the
    padding of evaluation batches; TF DeepLab pads with the mean pixel too)."""
    steps: list[Transform] = []
    if tuple(scale) != (1.0, 1.0):
        steps.append(RandomScale(*scale))
    steps.append(RandomCrop(crop_size, ignore_index=ignore_index, fill=IMAGENET_MEAN))
    if flip:
        steps.append(RandomHorizontalFlip())
    steps.append(Normalize())
    return Compose(steps)


def eval_transform() -> Compose:
    """Deterministic evaluation transform: ImageNet normalisation only."""
    return Compose([Normalize()])
