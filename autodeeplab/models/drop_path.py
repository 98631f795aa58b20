"""Scheduled Drop Path [Zoph et al. 2018; TF nas_cell.py `_apply_drop_path`].

Each op output of a decoded cell is zeroed for a whole sample with probability ``1 - keep`` and
rescaled by ``1 / keep`` otherwise, in training only. The keep probability is scaled twice [TF]:

* by depth: ``keep_l = 1 - (layer + 1) / L * (1 - keep_prob)`` (deeper cells drop more);
* by training progress ``p`` in [0, 1]: ``keep = 1 - p * (1 - keep_l)``.

``progress`` defaults to 1.0, the full per-layer rate; a training loop that wants the schedule sets
it with :meth:`autodeeplab.models.AutoDeepLab.set_drop_path_progress` (TF: ``step / total``).
"""

from __future__ import annotations

import torch
from torch import nn


class DropPath(nn.Module):
    """``(N, C, H, W)`` -> same shape; one Bernoulli(keep) draw per sample, training only."""

    def __init__(self, keep_prob: float = 1.0, layer_ratio: float = 1.0):
        super().__init__()
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"drop path keep probability must be in (0, 1], got {keep_prob}")
        if not 0.0 <= layer_ratio <= 1.0:
            raise ValueError(f"layer ratio must be in [0, 1], got {layer_ratio}")
        self.keep_prob = keep_prob
        self.layer_ratio = layer_ratio
        self.progress = 1.0

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1] (clipped, as TF's ``min(1, step / total)``)."""
        self.progress = min(1.0, max(0.0, float(fraction)))

    @property
    def current_keep_prob(self) -> float:
        keep = 1.0 - self.layer_ratio * (1.0 - self.keep_prob)
        return 1.0 - self.progress * (1.0 - keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep = self.current_keep_prob
        if not self.training or keep >= 1.0:
            return x
        mask = torch.empty(x.shape[0], 1, 1, 1, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"keep_prob={self.keep_prob}, layer_ratio={self.layer_ratio:.3f}"
