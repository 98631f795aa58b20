"""Geometry of the network-level search space: which nodes and transitions exist [P §3.2].

Layer 0 is the stem, which sits at level 0 (output stride 4). Layers ``1..L`` hold cells; level
``s`` has output stride ``4 * 2**s``. A node ``(l, s)`` exists when ``s`` can be reached from the
stem, i.e. ``s <= l``. ``beta[l, s, d]`` is the logit of the transition leaving node ``(l, s)``
towards layer ``l + 1`` in direction ``d`` (0: to the finer level ``s - 1``, 1: same level, 2: to
the coarser level ``s + 1``); it exists when both ends exist. Everything here is generated from
``(layers, levels)``: there is no per-layer special case to get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

#: beta's last axis.
DIRECTIONS: tuple[str, ...] = ("finer", "same", "coarser")


@dataclass(frozen=True)
class Lattice:
    """The ``layers x levels`` grid of the supernet."""

    layers: int = 12
    levels: int = 4

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise ValueError(f"layers must be >= 1, got {self.layers}")
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1, got {self.levels}")

    def exists(self, layer: int, level: int) -> bool:
        """Whether node ``(layer, level)`` exists (layer 0 is the stem, at level 0 only)."""
        return 0 <= layer <= self.layers and 0 <= level < self.levels and level <= layer

    def levels_at(self, layer: int) -> list[int]:
        """The levels that exist at ``layer``."""
        return [s for s in range(self.levels) if self.exists(layer, s)]

    @cached_property
    def nodes(self) -> tuple[tuple[int, int], ...]:
        """All cell nodes ``(layer, level)``, layer-major; the stem is not included."""
        return tuple((l, s) for l in range(1, self.layers + 1) for s in self.levels_at(l))

    @staticmethod
    def target_level(level: int, direction: int) -> int:
        return level + direction - 1

    def transition_exists(self, layer: int, level: int, direction: int) -> bool:
        """Whether ``beta[layer, level, direction]`` is a real transition."""
        return (
            0 <= layer < self.layers
            and 0 <= direction < 3
            and self.exists(layer, level)
            and self.exists(layer + 1, self.target_level(level, direction))
        )

    @cached_property
    def transitions(self) -> tuple[tuple[int, int, int], ...]:
        """Every valid ``(layer, level, direction)`` index of beta."""
        return tuple(
            (l, s, d)
            for l in range(self.layers)
            for s in range(self.levels)
            for d in range(3)
            if self.transition_exists(l, s, d)
        )

    def incoming(self, layer: int, level: int) -> list[tuple[int, int]]:
        """The transitions into node ``(layer, level)`` as ``(source level, direction)`` pairs,
        sources from finer to coarser. Eq. 6 sums over exactly these."""
        if not self.exists(layer, level) or layer == 0:
            raise ValueError(f"node ({layer}, {level}) is not a cell node of {self}")
        pairs = []
        for source in (level - 1, level, level + 1):
            direction = level - source + 1
            if self.transition_exists(layer - 1, source, direction):
                pairs.append((source, direction))
        return pairs

    def has_prev_prev(self, layer: int, level: int) -> bool:
        """Whether node ``(layer, level)`` has ``prev_prev`` input ``H(layer - 2, level)``.

        Where that node does not exist (layer 1; a level not yet reached two layers back),
        the cell's ``prev_prev`` edges are absent.
        """
        return self.exists(layer - 2, level)

    def beta_mask(self) -> torch.Tensor:
        """Boolean ``(layers, levels, 3)``: True where beta's entry is a real transition."""
        mask = torch.zeros(self.layers, self.levels, 3, dtype=torch.bool)
        for l, s, d in self.transitions:
            mask[l, s, d] = True
        return mask

    def count_paths(self, free_transitions: int | None = None) -> int:
        """Number of network paths: level sequences that start at level 0 and move at most one
        level per transition. ``free_transitions`` defaults to ``layers`` (all transitions from
        the stem); the paper's 2.9e4 corresponds to 11."""
        steps = self.layers if free_transitions is None else free_transitions
        counts = [1] + [0] * (self.levels - 1)
        for _ in range(steps):
            counts = [
                sum(counts[t] for t in (s - 1, s, s + 1) if 0 <= t < self.levels)
                for s in range(self.levels)
            ]
        return sum(counts)


def normalise_beta(beta: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked softmax of beta logits over each node's existing outgoing directions [P eq. 7-8].

    ``beta``: ``(L, levels, 3)`` logits; ``mask``: boolean of the same shape. Entries that are not
    transitions get weight 0, so each existing node's row sums to 1 (a transition probability).
    """
    filled = beta.masked_fill(~mask, torch.finfo(beta.dtype).min)
    return torch.softmax(filled, dim=-1) * mask
