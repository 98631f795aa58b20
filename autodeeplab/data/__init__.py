"""Datasets, joint image/mask transforms and search-time data splits."""

from autodeeplab.data.registry import (
    DATASETS,
    SPLITS,
    build_dataset,
    dataset_from_config,
    register_dataset,
)
from autodeeplab.data.split import (
    SeededSubset,
    epoch_loader,
    load_split,
    save_split,
    search_split,
)
from autodeeplab.data.textures import TEXTURES, TextureSegmentation
from autodeeplab.data.transforms import (
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    eval_transform,
    search_transform,
)

__all__ = [
    "DATASETS",
    "SPLITS",
    "TEXTURES",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "SeededSubset",
    "TextureSegmentation",
    "build_dataset",
    "dataset_from_config",
    "epoch_loader",
    "eval_transform",
    "load_split",
    "register_dataset",
    "save_split",
    "search_split",
    "search_transform",
]
