"""CUDA graphs for the search steps (``search.cuda_graphs``).

On a GPU a supernet step issues tens of thousands of small kernels, and eager PyTorch spends
more time launching them than the GPU spends running them. A CUDA graph records the kernels of
one step once and replays them with a single launch: the same kernels on the same data, so the
same search, without the launch cost.

:class:`GraphedGradients` records the forward and backward pass of a step (the loss and the
gradients of the step's parameters) on its first batch and replays it for every batch of that
shape. The optimiser step, the gradient averaging over ranks and the clipping stay eager.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from autodeeplab.search.bilevel import loss_and_gradients

#: Eager passes before the capture: cuDNN's algorithm choices and the supernet's cached index
#: tensors settle, so the capture records only kernels.
WARMUP_PASSES = 3


class GraphedGradients:
    """:func:`~autodeeplab.search.bilevel.loss_and_gradients` for ``params`` of ``net``,
    replayed from a CUDA graph (a :data:`~autodeeplab.search.bilevel.Gradients`).

    The first call captures the graph at its batch's shape and device (:func:`capture`),
    together with those of ``self.captured_with`` not yet captured (the other step's, set by
    :func:`graphed_steps`). Each call with a batch of that shape copies it into the graph's
    inputs and replays the graph. A batch of another shape runs eagerly. The loss and gradients
    returned are the graph's own tensors: the next replay of any graph sharing its pool (the
    other step's too) may overwrite them, so they must be used before that replay (the
    optimiser step does).

    ``pool``: a memory pool (``torch.cuda.graph_pool_handle()``) shared with other graphs that
    are never replayed at the same time, such as the other step's.
    """

    def __init__(
        self,
        net: nn.Module,
        params: Sequence[nn.Parameter],
        ignore_index: int,
        pool: tuple[int, int] | None = None,
    ) -> None:
        self.net, self.params, self.ignore_index, self.pool = net, list(params), ignore_index, pool
        self.captured_with: list[GraphedGradients] = []
        self.graph: torch.cuda.CUDAGraph | None = None
        self.images = self.target = self.loss = torch.empty(0)
        self.grads: list[torch.Tensor | None] = []

    def eager(
        self, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        return loss_and_gradients(self.net, self.params, images, target, self.ignore_index)

    def __call__(
        self, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        if images.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device; the batch is on {images.device}")
        if self.graph is None:
            others = [g for g in self.captured_with if g is not self and g.graph is None]
            capture([self, *others], images, target)
        elif images.shape != self.images.shape or target.shape != self.target.shape:
            return self.eager(images, target)
        self.images.copy_(images, non_blocking=True)
        self.target.copy_(target, non_blocking=True)
        self.graph.replay()
        return self.loss, self.grads


def capture(graphs: Sequence[GraphedGradients], images: torch.Tensor, target: torch.Tensor) -> None:
    """Capture ``graphs`` (of one network) at this batch's shape: first
    :data:`WARMUP_PASSES` eager passes of each on a side stream, then, with their memory freed,
    the recorded passes, so that the peak memory holds one eager pass or the graphs, not both.
    The BatchNorm buffers the warm-up passes moved are put back: a replay updates them once,
    as an eager step does."""
    net = graphs[0].net
    buffers = [b.detach().clone() for b in net.buffers()]
    for graphed in graphs:
        graphed.images, graphed.target = images.clone(), target.clone()
    side = torch.cuda.Stream(images.device)
    side.wait_stream(torch.cuda.current_stream(images.device))
    with torch.cuda.stream(side):
        for graphed in graphs:
            for _ in range(WARMUP_PASSES):
                graphed.eager(graphed.images, graphed.target)
    torch.cuda.current_stream(images.device).wait_stream(side)
    torch.cuda.empty_cache()  # the warm-up passes' blocks, outside the graphs' pool
    for graphed in graphs:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=graphed.pool):
            graphed.loss, graphed.grads = graphed.eager(graphed.images, graphed.target)
        graphed.graph = graph
    with torch.no_grad():
        for buffer, saved in zip(net.buffers(), buffers, strict=True):
            buffer.copy_(saved)


def graphed_steps(
    net: nn.Module,
    step_params: Sequence[Sequence[nn.Parameter]],
    ignore_index: int,
) -> list[GraphedGradients]:
    """One :class:`GraphedGradients` per step (its parameters in ``step_params``), sharing one
    memory pool and captured together on the first call of any."""
    pool = torch.cuda.graph_pool_handle()
    steps = [GraphedGradients(net, params, ignore_index, pool) for params in step_params]
    for step in steps:
        step.captured_with = steps
    return steps
