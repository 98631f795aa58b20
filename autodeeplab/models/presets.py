"""Named model presets [P Table 2]: Auto-DeepLab-S / -M / -L, the paper genotype at F = 20 / 32 /
48. With 19 classes they have 10.15M / 21.62M / 44.42M parameters (tested)."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from autodeeplab.models.deeplab import AutoDeepLab, build_model

#: Filter multiplier F of each preset [P §5.2].
PRESET_FILTERS = MappingProxyType(
    {"auto_deeplab_s": 20, "auto_deeplab_m": 32, "auto_deeplab_l": 48}
)


def _preset(filter_multiplier: int, *, num_classes: int, **kwargs: Any) -> AutoDeepLab:
    return build_model(
        "paper", num_classes=num_classes, filter_multiplier=filter_multiplier, **kwargs
    )


def auto_deeplab_s(*, num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-S (F = 20; 10.15M parameters with 19 classes)."""
    return _preset(PRESET_FILTERS["auto_deeplab_s"], num_classes=num_classes, **kwargs)


def auto_deeplab_m(*, num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-M (F = 32; 21.62M parameters with 19 classes)."""
    return _preset(PRESET_FILTERS["auto_deeplab_m"], num_classes=num_classes, **kwargs)


def auto_deeplab_l(*, num_classes: int, **kwargs: Any) -> AutoDeepLab:
    """Auto-DeepLab-L (F = 48; 44.42M parameters with 19 classes)."""
    return _preset(PRESET_FILTERS["auto_deeplab_l"], num_classes=num_classes, **kwargs)


#: name -> builder ``(*, num_classes, **kwargs) -> AutoDeepLab``; "s", "m", "l" are aliases.
PRESETS: MappingProxyType[str, Callable[..., AutoDeepLab]] = MappingProxyType(
    {
        "auto_deeplab_s": auto_deeplab_s,
        "auto_deeplab_m": auto_deeplab_m,
        "auto_deeplab_l": auto_deeplab_l,
        "s": auto_deeplab_s,
        "m": auto_deeplab_m,
        "l": auto_deeplab_l,
    }
)
