"""Typed configuration of the data a stage reads (the ``data`` group of ``conf/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DataConfig:
    """Which data the search runs on (``data=<name>``)."""

    name: str = "textures"  # a registered dataset (autodeeplab.data.DATASETS)
    root: str | None = None  # dataset directory; the embedded texture set needs none
    num_classes: int = 5  # must match the dataset
    ignore_index: int = 255  # label value left out of the loss and the metrics
    crop_size: int = 64  # square training crops (padded with ignore_index when smaller)
    scale_min: float = 1.0  # random rescaling range before cropping
    scale_max: float = 1.0
    flip: bool = True  # random horizontal flips
    train_samples: int | None = None  # use only the first N training samples (None: all)
    val_samples: int | None = None  # use only the first N validation samples (None: all)
    num_workers: int = 0  # DataLoader worker processes
    options: dict[str, Any] = field(default_factory=dict)  # passed to the dataset builder
