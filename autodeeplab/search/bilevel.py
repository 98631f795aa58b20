"""The architecture step apart from the network: first-order alternating bilevel optimisation
[P §4.2]. A weight step on a batch of split A, then an alpha/beta step on a batch of split B."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Pixel cross-entropy; ``logits`` ``(N, K, H, W)``, ``target`` ``(N, H, W)``."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


def weight_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    grad_clip: float | None,
) -> float:
    """One SGD step on the supernet weights (alpha and beta untouched). Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = segmentation_loss(net(images), target, ignore_index)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(
            [p for group in optimizer.param_groups for p in group["params"]], grad_clip
        )
    optimizer.step()
    return loss.item()


def arch_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
) -> float:
    """One first-order step on alpha and beta with the weights fixed. Returns the loss."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    loss = segmentation_loss(net(images), target, ignore_index)
    # Only alpha/beta gradients: the weight gradients of this batch would be thrown away.
    for param, grad in zip(params, torch.autograd.grad(loss, params), strict=True):
        param.grad = grad
    optimizer.step()
    return loss.item()
