"""The architecture step apart from the network: first-order alternating bilevel optimisation
[P §4.2]. A weight step on a batch of split A, then an alpha/beta step on a batch of split B.

Under ``torchrun`` each rank computes the gradients of its own batch and both steps average them
over the ranks before the update (in a single process this does nothing): every rank applies the
same update, so the weights, alpha and beta stay identical on all ranks. The supernet is not
wrapped in DistributedDataParallel: the two steps differentiate different parameters (the
architecture step with ``autograd.grad``), which DDP's reduce-everything-after-backward hooks
do not fit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.engine import distributed


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> torch.Tensor:
    """Pixel cross-entropy; ``logits`` ``(N, K, H, W)``, ``target`` ``(N, H, W)``."""
    return F.cross_entropy(logits, target, ignore_index=ignore_index)


@contextlib.contextmanager
def gradients_only_for(net: nn.Module, params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Within: every parameter of ``net`` but ``params`` has ``requires_grad`` off (restored on
    exit), so a backward pass skips the gradients nobody asked for: the supernet's fused mixed
    ops then skip their weight gradients, which ``autograd.grad`` alone cannot tell them."""
    keep = {id(p) for p in params}
    frozen = [p for p in net.parameters() if id(p) not in keep and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def optimised_parameters(optimizer: torch.optim.Optimizer) -> list[nn.Parameter]:
    """The parameters ``optimizer`` steps, in its order (of its groups, then within each)."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def loss_and_gradients(
    net: nn.Module,
    params: Sequence[nn.Parameter],
    images: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int,
) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The loss of a batch and its gradients for ``params`` (``None`` for one the loss does not
    reach); the other parameters' gradients are not computed (:func:`gradients_only_for`)."""
    with gradients_only_for(net, params):
        loss = segmentation_loss(net(images), target, ignore_index)
        grads = torch.autograd.grad(loss, list(params), allow_unused=True)
    return loss.detach(), list(grads)


#: A step's forward and backward pass other than :func:`loss_and_gradients` for the optimiser's
#: parameters, such as its CUDA graph (:class:`autodeeplab.search.graphs.GraphedGradients`):
#: ``(images, target) -> (loss, gradients)``.
Gradients = Callable[
    [torch.Tensor, torch.Tensor], tuple[torch.Tensor, Sequence[torch.Tensor | None]]
]


def weight_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    grad_clip: float | None,
    gradients: Gradients | None = None,
) -> float:
    """One SGD step on the supernet weights (alpha and beta untouched). Returns the loss (of
    this rank's batch). ``gradients``: how to compute the loss and the weights' gradients
    (default: a backward pass)."""
    optimizer.zero_grad(set_to_none=True)
    params = optimised_parameters(optimizer)
    if gradients is None:
        loss = segmentation_loss(net(images), target, ignore_index)
        loss.backward()
    else:
        loss, grads = gradients(images, target)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
    # The same parameters get gradients on every rank: the graph does not depend on the data.
    distributed.all_reduce_mean_([p.grad for p in params if p.grad is not None])
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(params, grad_clip)  # the norm of the averaged gradient
    optimizer.step()
    # Free the weight gradients now: the architecture step that follows would otherwise
    # carry them (as large as the weights) on top of its own activations.
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def arch_step(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    target: torch.Tensor,
    *,
    ignore_index: int,
    gradients: Gradients | None = None,
) -> float:
    """One first-order step on alpha and beta with the weights fixed. Returns the loss (of this
    rank's batch). ``gradients``: how to compute the loss and alpha's and beta's gradients
    (default: :func:`loss_and_gradients`)."""
    params = optimised_parameters(optimizer)
    # Only alpha/beta gradients: the weight gradients of this batch would be thrown away.
    if gradients is None:
        loss, grads = loss_and_gradients(net, params, images, target, ignore_index)
    else:
        loss, grads = gradients(images, target)
    distributed.all_reduce_mean_([g for g in grads if g is not None])
    for param, grad in zip(params, grads, strict=True):
        param.grad = grad
    optimizer.step()
    return loss.item()
