"""The decoded segmentation model: backbone along the path + DeepLabv3+ head [P §5.2].

``build_model(genotype, num_classes=19, filter_multiplier=20)`` builds it; ``model.model_args`` is a
plain (JSON-able) dict with which ``build_model(**model.model_args)`` rebuilds the same model, so a
checkpoint that stores it describes itself.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.models.backbone import Backbone
from autodeeplab.models.drop_path import DropPath
from autodeeplab.models.heads import DeepLabHead
from autodeeplab.ops import check_training_input, resize


class AutoDeepLab(nn.Module):
    """``forward(x)`` with ``x`` ``(N, 3, H, W)`` -> ``{"out": logits (N, num_classes, H, W)}``.

    ``backbone`` (:class:`Backbone`, cells in ``backbone.cells``) gives the features at output
    stride ``4 * 2**path[-1]`` and the stride-4 low-level feature; ``head``
    (:class:`DeepLabHead`) gives stride-4 logits, upsampled bilinearly to the input size.
    """

    def __init__(
        self,
        genotype: Genotype,
        *,
        num_classes: int,
        filter_multiplier: int = 20,
        drop_path_keep_prob: float = 1.0,
        stem_channels: tuple[int, int, int] = (64, 64, 128),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
    ):
        super().__init__()
        _check_arguments(
            num_classes=num_classes,
            filter_multiplier=filter_multiplier,
            aspp_channels=aspp_channels,
            low_level_channels=low_level_channels,
            decoder_channels=decoder_channels,
        )
        stem_channels = tuple(stem_channels)
        if len(stem_channels) != 3 or not all(_is_positive_int(c) for c in stem_channels):
            raise ValueError(
                f"stem_channels={list(stem_channels)}; expected three positive ints (the "
                "stem's three convs)"
            )
        if isinstance(drop_path_keep_prob, bool) or not 0 < drop_path_keep_prob <= 1:
            raise ValueError(
                f"drop_path_keep_prob={drop_path_keep_prob}; expected a probability in (0, 1]"
            )
        self.backbone = Backbone(
            genotype,
            filter_multiplier,
            stem_channels=stem_channels,
            drop_path_keep_prob=drop_path_keep_prob,
        )
        self.head = DeepLabHead(
            self.backbone.out_channels,
            self.backbone.low_level_channels,
            num_classes,
            output_stride=self.backbone.output_stride,
            aspp_channels=aspp_channels,
            low_level_channels=low_level_channels,
            decoder_channels=decoder_channels,
        )
        self.num_classes = num_classes
        #: Everything ``build_model`` needs to rebuild this model (plain, JSON-able values).
        self.model_args: dict[str, Any] = {
            "genotype": genotype.to_dict(),
            "num_classes": num_classes,
            "filter_multiplier": filter_multiplier,
            "drop_path_keep_prob": drop_path_keep_prob,
            "stem_channels": list(stem_channels),
            "aspp_channels": aspp_channels,
            "low_level_channels": low_level_channels,
            "decoder_channels": decoder_channels,
        }

    @property
    def output_stride(self) -> int:
        return self.backbone.output_stride

    def set_drop_path_progress(self, fraction: float) -> None:
        """Scheduled Drop Path: training progress in [0, 1] (TF: ``step / total_steps``)."""
        for module in self.modules():
            if isinstance(module, DropPath):
                module.set_progress(fraction)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.training:
            check_training_input("AutoDeepLab", x.shape, max(self.backbone.path, default=0))
        features, low_level = self.backbone(x)
        logits = self.head(features, low_level)
        return {"out": resize(logits, tuple(x.shape[-2:]))}


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_arguments(**values: Any) -> None:
    """Refuse, by name, an argument that is not a positive int (the layers' own errors, e.g.
    about conv groups, would name none)."""
    for name, value in values.items():
        if not _is_positive_int(value):
            raise ValueError(f"{name}={value!r}; expected a positive int")


def build_model(
    genotype: Genotype | Mapping[str, Any] | str,
    *,
    num_classes: int,
    filter_multiplier: int = 20,
    drop_path_keep_prob: float = 1.0,
    **options: Any,
) -> AutoDeepLab:
    """Build the decoded model of ``genotype``.

    ``genotype`` is a :class:`Genotype`, its ``to_dict()`` form (as in ``model_args``), a
    registered name such as ``"paper"`` or a genotype.json path (as the retrain's
    ``genotype=``: :func:`~autodeeplab.genotype.load_genotype`). ``options`` are the other
    keywords of :class:`AutoDeepLab` (``stem_channels``, ``aspp_channels``,
    ``low_level_channels``, ``decoder_channels``); ``None`` values are dropped so that gaps in
    a config keep the defaults.
    """
    if isinstance(genotype, (str, os.PathLike)):
        genotype = load_genotype(os.fspath(genotype))
    elif not isinstance(genotype, Genotype):
        genotype = Genotype.from_dict(genotype, source="model genotype")
    options = {key: value for key, value in options.items() if value is not None}
    if "stem_channels" in options:
        options["stem_channels"] = tuple(options["stem_channels"])
    return AutoDeepLab(
        genotype,
        num_classes=num_classes,
        filter_multiplier=filter_multiplier,
        drop_path_keep_prob=drop_path_keep_prob,
        **options,
    )
