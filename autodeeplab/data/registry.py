"""Name -> builder registry for segmentation datasets.

A builder has the signature ``builder(root, split, transform, **options)`` and returns a
``torch.utils.data.Dataset`` whose items are ``(image (3, H, W) float32, mask (H, W) int64)``.
"""

from __future__ import annotations

import inspect
import logging
import os
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from autodeeplab.data.config import DataConfig

SPLITS = ("train", "val", "test")

log = logging.getLogger(__name__)

DATASETS: dict[str, Callable[..., Dataset]] = {}

# Parameters every builder receives positionally; they are not user options.
_FIXED_PARAMS = ("root", "split", "transform")


def register_dataset(name: str) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Decorator registering ``builder(root, split, transform, **options)`` under ``name``."""

    def decorator(builder: Callable[..., Dataset]) -> Callable[..., Dataset]:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} is already registered (by {DATASETS[name]!r})")
        DATASETS[name] = builder
        return builder

    return decorator


def _accepted_options(builder: Callable[..., Dataset]) -> tuple[list[str], bool]:
    """Option names a builder accepts, and whether it also takes arbitrary ``**kwargs``."""
    params = inspect.signature(builder).parameters.values()
    names = [
        p.name
        for p in params
        if p.name not in _FIXED_PARAMS
        and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    return names, var_kw


def build_dataset(
    name: str,
    *,
    root: str | None = None,
    split: str,
    transform: Callable | None = None,
    **options,
) -> Dataset:
    """Build the registered dataset ``name`` for ``split`` ("train", "val" or "test")."""
    # Built-in datasets register on import; importing here keeps `build_dataset` usable even
    # when only this module was imported.
    from autodeeplab.data import ade20k, cityscapes, folder, textures, voc  # noqa: F401

    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; registered datasets: {sorted(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; expected one of {SPLITS}")
    builder = DATASETS[name]
    accepted, var_kw = _accepted_options(builder)
    if not var_kw:
        for key in options:
            if key not in accepted:
                raise ValueError(
                    f"unknown option {key!r} for dataset {name!r}; accepted options: {accepted}"
                )
    _check_option_types(name, builder, options)
    return builder(root, split, transform, **options)


def _check_option_types(name: str, builder: Callable[..., Dataset], options: dict) -> None:
    """Refuse an option whose value does not have its builder parameter's type (``bool``,
    ``int``, ``float``, ``str``, paths, ``None`` and unions of them; others are not checked):
    on the command line ``data.options.coarse=no`` is the string ``'no'``, which a builder
    would take as true, and ``data.options.image_size=abc`` would fail deep inside it."""
    try:
        hints = typing.get_type_hints(builder)
    except (NameError, TypeError):  # annotations this check cannot resolve: leave them be
        return
    for key, value in options.items():
        expected = hints.get(key)
        if expected is not None and _matches(value, expected) is False:
            shown = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
            raise ValueError(
                f"data.options.{key}={value!r}: dataset {name!r} expects {shown} "
                f"(got {type(value).__name__})"
            )


def _matches(value: Any, expected: Any) -> bool | None:
    """Whether ``value`` has the type ``expected``; ``None`` where the type is not checked."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):
        verdicts = [_matches(value, arg) for arg in typing.get_args(expected)]
        if True in verdicts:
            return True
        return None if None in verdicts else False
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected in (str, Path, os.PathLike):
        return isinstance(value, (str, os.PathLike))
    return None


def check_against_config(dataset: Dataset, cfg: DataConfig) -> None:
    """Raises ``ValueError`` where ``dataset`` (built from ``cfg``) has another class count or
    ignore index than ``cfg`` states, saying which setting fits."""
    num_classes = getattr(dataset, "num_classes", cfg.num_classes)
    if num_classes != cfg.num_classes:
        raise ValueError(
            f"data.num_classes={cfg.num_classes} but dataset {cfg.name!r} has {num_classes} "
            f"classes; set data.num_classes={num_classes}"
        )
    ignore_index = getattr(dataset, "ignore_index", cfg.ignore_index)
    if ignore_index != cfg.ignore_index:
        raise ValueError(
            f"data.ignore_index={cfg.ignore_index} but dataset {cfg.name!r} marks ignored "
            f"pixels with {ignore_index}; set data.ignore_index={ignore_index}"
        )


def dataset_from_config(
    cfg: DataConfig, split: str, limit: int | None = None, limit_key: str | None = None
) -> Dataset:
    """The ``split`` of the dataset ``cfg`` describes, checked against its ``num_classes`` and
    ``ignore_index``; ``limit`` keeps the first samples only, and ``limit_key`` is the setting
    it comes from, as messages name it (default ``data.<split>_samples``)."""
    limit_key = limit_key or f"data.{split}_samples"
    dataset = build_dataset(cfg.name, root=cfg.root, split=split, **cfg.options)
    check_against_config(dataset, cfg)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"{limit_key}={limit}; expected a positive number or null")
        if limit > len(dataset):
            log.warning(
                "%s=%d but the %s split of %s has %d samples: using all of them",
                limit_key, limit, split, cfg.name, len(dataset),
            )  # fmt: skip
        dataset = Subset(dataset, range(min(limit, len(dataset))))
    return dataset
