"""Typed configuration of the data a stage reads (the ``data`` group of ``conf/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from autodeeplab.engine.config import RangeCheck


@dataclass
class DataConfig:
    """Which data a stage reads (``data=<name>``); the augmentation keys (crop, scale, flip)
    apply to training (search, retrain) only."""

    # Required in every conf/data/*.yaml (MISSING defaults, so `???` there stays required).
    name: str = MISSING  # a registered dataset (autodeeplab.data.DATASETS)
    root: str | None = MISSING  # dataset directory (null for the embedded texture set)
    num_classes: int = MISSING  # must match the dataset
    ignore_index: int = 255  # label value left out of the loss and the metrics
    crop_size: int = 64  # square training crops (padded with ignore_index when smaller)
    scale_min: float = 1.0  # random rescaling range before cropping
    scale_max: float = 1.0
    flip: bool = True  # random horizontal flips
    train_samples: int | None = None  # use only the first N training samples (None: all)
    val_samples: int | None = None  # use only the first N validation samples (None: all)
    num_workers: int = 0  # DataLoader worker processes
    options: dict[str, Any] = field(default_factory=dict)  # passed to the dataset builder


def check_data_ranges(check: RangeCheck, data: DataConfig) -> None:
    """Adds ``data``'s settings outside their range to ``check``."""
    check.positive("data.crop_size", data.crop_size)
    scales = (data.scale_min, data.scale_max)
    check.need(
        0 < data.scale_min <= data.scale_max,
        "data.scale_min, data.scale_max",
        scales,
        "0 < scale_min <= scale_max",
    )
    check.need(data.num_workers >= 0, "data.num_workers", data.num_workers, "0 or more")
