"""Segmentation metrics (public path of DESIGN §7): ``from autodeeplab.metrics import ...``."""

from autodeeplab.engine.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
