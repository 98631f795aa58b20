"""Segmentation metrics at the public path of the README's Python API:
``from autodeeplab.metrics import ConfusionMatrix``."""

from autodeeplab.engine.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
