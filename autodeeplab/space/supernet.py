"""The supernet: a stem, a lattice of search cells, and one ASPP head per level [P §3.2, §4.1].

``H(l, s) = sum_{s'} beta(l-1; s' -> s) * Cell(resample(H(l-1, s')), H(l-2, s); alpha)`` (eq. 6),
over the neighbours ``s'`` in ``{s-1, s, s+1}`` that exist. alpha ``(edges, ops)`` is shared by
every cell; beta ``(L, levels, 3)`` holds the logits of the transitions leaving each node.
Both are ``nn.Parameter``s kept apart from the weights (:meth:`arch_parameters`,
:meth:`weight_parameters`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from autodeeplab.ops import PRIMITIVES, ReLUConvBN, Stem, check_training_input, half_size, resize
from autodeeplab.space.cell import SearchCell
from autodeeplab.space.edges import num_edges
from autodeeplab.space.heads import SearchASPP
from autodeeplab.space.lattice import Lattice, normalise_beta


class SearchNode(nn.Module):
    """Node ``(layer, level)``: resamples each incoming ``H(layer-1, s')`` to ``C = F * 2**level``
    channels (finer: stride-2 3x3 conv; same: 1x1; coarser: bilinear upsampling then 1x1, all
    ReLU-conv-BN [P §4.1]), runs its one cell over all paths and mixes them with beta."""

    def __init__(
        self,
        lattice: Lattice,
        layer: int,
        level: int,
        filter_multiplier: int,
        blocks: int,
        stem_channels: int,
        partial_channels: int = 1,
    ):
        super().__init__()
        self.layer, self.level = layer, level
        self.incoming = lattice.incoming(layer, level)
        channels = filter_multiplier * 2**level

        def width(l: int, s: int) -> int:
            return stem_channels if l == 0 else blocks * filter_multiplier * 2**s

        self.resample = nn.ModuleList(
            ReLUConvBN(width(layer - 1, source), channels, 3, 2, affine=False)
            if source < level
            else ReLUConvBN(width(layer - 1, source), channels, 1, affine=False)
            for source, _ in self.incoming
        )
        has_prev_prev = lattice.has_prev_prev(layer, level)
        self.prev_prev = (
            ReLUConvBN(width(layer - 2, level), channels, 1, affine=False)
            if has_prev_prev
            else None
        )
        self.cell = SearchCell(
            channels, blocks, len(self.incoming), has_prev_prev, partial_channels
        )
        # Where this node's weights sit in normalised beta: beta[layer - 1, source, direction].
        self.register_buffer(
            "beta_index",
            torch.tensor([[layer - 1, source, direction] for source, direction in self.incoming])
            .t()
            .contiguous(),
            persistent=False,
        )

    def forward(
        self,
        sources: list[torch.Tensor],
        prev_prev: torch.Tensor | None,
        alpha_weights: torch.Tensor,
        beta_weights: torch.Tensor,
        size: tuple[int, int],
    ) -> torch.Tensor:
        """``sources``: ``H(layer-1, s')`` for each incoming transition; ``size``: this level's
        spatial size. Returns ``H(layer, level)``, ``(N, B*C, H, W)``."""
        inputs = []
        for (source, _), module, x in zip(self.incoming, self.resample, sources, strict=True):
            if source > self.level:
                x = resize(x, size)
            inputs.append(module(x))
        pp = self.prev_prev(prev_prev) if self.prev_prev is not None else None
        states = self.cell(torch.cat(inputs, dim=1), pp, alpha_weights)  # (N, P, B, C, H, W)
        i, s, d = self.beta_index
        path_weights = beta_weights[i, s, d].to(states.dtype).view(1, -1, 1, 1, 1, 1)
        return (states * path_weights).sum(dim=1).flatten(1, 2)


@contextlib.contextmanager
def _frozen_buffers(module: nn.Module) -> Iterator[None]:
    """Restores ``module``'s buffers (BatchNorm running statistics) on exit, so that the forward
    pass that activation checkpointing repeats during backward does not update them twice."""
    saved = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


class Supernet(nn.Module):
    """``forward(x)``: images ``(N, 3, H, W)`` -> logits ``(N, num_classes, H, W)``."""

    def __init__(
        self,
        num_classes: int,
        layers: int = 12,
        levels: int = 4,
        filter_multiplier: int = 8,
        blocks: int = 5,
        stem_channels: tuple[int, int, int] = (64, 64, 128),
        aspp_channels: int = 64,
        arch_init_std: float = 1e-3,
        partial_channels: int = 1,
    ):
        super().__init__()

        def positive(value: object) -> bool:
            return isinstance(value, int) and not isinstance(value, bool) and value > 0

        sizes = {
            "num_classes": num_classes,
            "layers": layers,
            "levels": levels,
            "filter_multiplier": filter_multiplier,
            "blocks": blocks,
            "aspp_channels": aspp_channels,
        }
        for name, value in sizes.items():
            if not positive(value):
                raise ValueError(f"supernet {name}={value!r}: expected a positive integer")
        if len(stem_channels) != 3 or not all(map(positive, stem_channels)):
            raise ValueError(
                f"supernet stem_channels={stem_channels!r}: expected 3 positive integers"
            )
        self.num_classes = num_classes
        #: K of PC-DARTS partial channel connections (1: the exact eq. 6 supernet); see
        #: :mod:`autodeeplab.space.cell`.
        self.partial_channels = partial_channels
        self.lattice = Lattice(layers, levels)
        self.filter_multiplier, self.blocks = filter_multiplier, blocks
        self.stem = Stem(tuple(stem_channels))
        self.nodes = nn.ModuleList(
            SearchNode(
                self.lattice,
                l,
                s,
                filter_multiplier,
                blocks,
                self.stem.out_channels,
                partial_channels,
            )
            for l, s in self.lattice.nodes
        )
        self.head_levels = self.lattice.levels_at(layers)
        self.heads = nn.ModuleList(
            # dilation 96 / output stride: 24, 12, 6, 3 at levels 0..3 [P §4.1]
            SearchASPP(
                blocks * filter_multiplier * 2**s, num_classes, max(1, 24 // 2**s), aspp_channels
            )
            for s in self.head_levels
        )
        # Architecture parameters, 1e-3 * N(0, 1) [P §5.1].
        self.alpha = nn.Parameter(arch_init_std * torch.randn(num_edges(blocks), len(PRIMITIVES)))
        self.beta = nn.Parameter(arch_init_std * torch.randn(layers, levels, 3))
        self.register_buffer("beta_mask", self.lattice.beta_mask(), persistent=False)
        #: Activation checkpointing per node: keep only the nodes' inputs and recompute each node
        #: during backward. Same results (BatchNorm running statistics included), less memory,
        #: about one more forward pass of time.
        self.checkpoint_nodes = False
        #: ``torch.bfloat16``: run the network under autocast (mixed precision; meant for GPUs).
        #: alpha, beta and their softmax stay float32, and so do the returned logits.
        self.autocast_dtype: torch.dtype | None = None

    def arch_parameters(self) -> tuple[nn.Parameter, nn.Parameter]:
        """``(alpha, beta)``: logits ``(edges, ops)`` and ``(L, levels, 3)``."""
        return self.alpha, self.beta

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except alpha and beta."""
        arch = {id(p) for p in self.arch_parameters()}
        return (p for p in self.parameters() if id(p) not in arch)

    def alpha_weights(self) -> torch.Tensor:
        """Softmax of alpha over ops, ``(edges, ops)``."""
        return torch.softmax(self.alpha, dim=-1)

    def beta_weights(self) -> torch.Tensor:
        """beta as transition probabilities, ``(L, levels, 3)``, 0 where no transition."""
        return normalise_beta(self.beta, self.beta_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with(x, self.alpha_weights(), self.beta_weights())

    def forward_with(
        self, x: torch.Tensor, alpha_weights: torch.Tensor, beta_weights: torch.Tensor
    ) -> torch.Tensor:
        """The forward pass under given normalised architecture weights."""
        if self.training:
            # Level s exists from layer s on.
            coarsest = min(self.lattice.levels - 1, self.lattice.layers)
            check_training_input("Supernet", x.shape, coarsest)
        # No cast cache: each weight is cast once per pass anyway, and a CUDA graph capture
        # (search.cuda_graphs) must not keep casts made outside it.
        autocast = torch.autocast(
            x.device.type,
            dtype=self.autocast_dtype,
            enabled=self.autocast_dtype is not None,
            cache_enabled=False,
        )
        with autocast:
            _, stem = self.stem(x)
            sizes = [tuple(stem.shape[-2:])]
            for _ in range(1, self.lattice.levels):
                sizes.append(half_size(sizes[-1]))
            states: dict[tuple[int, int], torch.Tensor] = {(0, 0): stem}
            for (l, s), node in zip(self.lattice.nodes, self.nodes, strict=True):
                sources = [states[(l - 1, source)] for source, _ in node.incoming]
                prev_prev = states.get((l - 2, s)) if node.prev_prev is not None else None
                args = (sources, prev_prev, alpha_weights, beta_weights, sizes[s])
                if self.checkpoint_nodes and torch.is_grad_enabled():
                    states[(l, s)] = checkpoint(
                        node,
                        *args,
                        use_reentrant=False,
                        context_fn=lambda node=node: (
                            contextlib.nullcontext(),
                            _frozen_buffers(node),
                        ),
                    )
                else:
                    states[(l, s)] = node(*args)
            last = self.lattice.layers
            logits = [
                resize(head(states[(last, s)]), tuple(x.shape[-2:]))
                for s, head in zip(self.head_levels, self.heads, strict=True)
            ]
            out = torch.stack(logits).sum(dim=0)
        # Logits computed in reduced precision (autocast) come back as float32; a float64 net
        # keeps float64.
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out


def build_supernet(
    *,
    num_classes: int = 19,
    layers: int = 12,
    filter_multiplier: int = 8,
    blocks: int = 5,
    levels: int = 4,
    stem_channels: tuple[int, int, int] = (64, 64, 128),
    aspp_channels: int = 64,
    partial_channels: int = 1,
) -> Supernet:
    """The Auto-DeepLab search space (defaults: the paper's 12 layers x 4 levels, F = 8, B = 5).

    ``partial_channels`` > 1 switches to PC-DARTS partial channel connections, a different
    (cheaper) search algorithm; see :mod:`autodeeplab.space.cell`."""
    return Supernet(
        num_classes,
        layers,
        levels,
        filter_multiplier,
        blocks,
        tuple(stem_channels),
        aspp_channels,
        partial_channels=partial_channels,
    )
