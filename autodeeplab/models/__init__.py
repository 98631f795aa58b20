"""Decoded networks [P §5.2]: cell, backbone along a path, DeepLabv3+ head, presets."""

from autodeeplab.models.backbone import Backbone
from autodeeplab.models.cell import DecodedCell, double_size
from autodeeplab.models.deeplab import AutoDeepLab, build_model
from autodeeplab.models.drop_path import DropPath
from autodeeplab.models.heads import ASPP, DeepLabHead, aspp_rates
from autodeeplab.models.loading import load_model
from autodeeplab.models.presets import (
    PRESETS,
    auto_deeplab_l,
    auto_deeplab_m,
    auto_deeplab_s,
)

__all__ = [
    "ASPP",
    "PRESETS",
    "AutoDeepLab",
    "Backbone",
    "DecodedCell",
    "DeepLabHead",
    "DropPath",
    "aspp_rates",
    "auto_deeplab_l",
    "auto_deeplab_m",
    "auto_deeplab_s",
    "build_model",
    "double_size",
    "load_model",
]
