"""Numbers behind the figures: normalised architecture weights, their entropy, and how decoded
genotypes differ (pure numpy; no plotting)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from autodeeplab.decode import as_array, op_probabilities, transition_probabilities
from autodeeplab.genotype import Genotype
from autodeeplab.space.lattice import Lattice


def alpha_weights(alpha: Any) -> np.ndarray:
    """Softmax over ops of alpha logits ``(..., edges, ops)``: the mixed-op weights [P eq. 2],
    normalised as :func:`autodeeplab.decode.decode_cell` does."""
    return op_probabilities(alpha)


def beta_probabilities(beta: Any) -> np.ndarray:
    """Transition probabilities of beta logits ``(..., L, levels, 3)`` (one or many epochs), 0
    where a transition does not exist; see :func:`autodeeplab.decode.transition_probabilities`."""
    beta = as_array(beta)
    if beta.ndim == 3:
        return transition_probabilities(beta)
    return np.stack([beta_probabilities(b) for b in beta])


def entropy(p: Any, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of distributions along ``axis`` (``0 log 0 = 0``)."""
    p = as_array(p)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def alpha_entropy(alpha: Any, *, normalised: bool = False) -> np.ndarray:
    """Entropy of each edge's op distribution, ``(..., edges)``; ``normalised`` divides by the
    uniform maximum ``log(ops)``, so 1 means undecided and 0 means one op."""
    weights = alpha_weights(alpha)
    h = entropy(weights)
    return h / np.log(weights.shape[-1]) if normalised else h


def beta_entropy(beta: Any, *, normalised: bool = False) -> np.ndarray:
    """Entropy of each node's outgoing transition distribution over its existing directions,
    ``(..., L, levels)``; NaN at nodes with fewer than two transitions (no choice to make).
    ``normalised`` divides by ``log(number of directions)`` of the node."""
    beta = as_array(beta)
    lattice = Lattice(beta.shape[-3], beta.shape[-2])
    choices = lattice.beta_mask().numpy().sum(-1)
    h = entropy(beta_probabilities(beta))
    if normalised:
        h = h / np.log(np.maximum(choices, 2))
    return np.where(choices >= 2, h, np.nan)


def mean_beta_entropy(beta: Any, *, normalised: bool = False) -> np.ndarray:
    """Mean of :func:`beta_entropy` over the nodes with a choice: one value per epoch for
    ``(epochs, L, levels, 3)``, a scalar array for one epoch."""
    h = beta_entropy(beta, normalised=normalised)
    return np.nanmean(h.reshape(*h.shape[:-2], -1), axis=-1)


@dataclass(frozen=True)
class GenotypeDiff:
    """How genotype ``b`` differs from ``a``.

    ``blocks``: the blocks (1-based) whose kept edges differ in any way; ``inputs``: the blocks
    whose pair of inputs differs; ``ops``: ``(block, input, op in a, op in b)`` for each input
    kept by both with different ops; ``layers``: the layers (1-based) whose path level differs.
    """

    blocks: tuple[int, ...]
    inputs: tuple[int, ...]
    ops: tuple[tuple[int, str, str, str], ...]
    layers: tuple[int, ...]

    @property
    def same(self) -> bool:
        return not self.blocks and not self.layers

    def describe(self) -> str:
        """One short line per kind of change ("no change" when there is none)."""
        if self.same:
            return "no change"
        lines = []
        if self.inputs:
            lines.append("inputs changed in " + ", ".join(f"block{b}" for b in self.inputs))
        for block, source, op_a, op_b in self.ops:
            lines.append(f"block{block} <- {source}: {op_a} -> {op_b}")
        if self.layers:
            lines.append("path changed at layers " + ", ".join(map(str, self.layers)))
        return "\n".join(lines)


def diff_genotypes(a: Genotype, b: Genotype) -> GenotypeDiff:
    """Compare two genotypes of the same search space (same blocks and layers)."""
    if a.blocks != b.blocks or a.layers != b.layers:
        raise ValueError(
            f"cannot compare genotypes of different spaces: {a.blocks} blocks and "
            f"{a.layers} layers vs {b.blocks} blocks and {b.layers} layers"
        )
    blocks, inputs, ops = [], [], []
    for number, (block_a, block_b) in enumerate(zip(a.cell, b.cell), start=1):
        if block_a != block_b:
            blocks.append(number)
        op_a = {e.input: e.op for e in block_a}
        op_b = {e.input: e.op for e in block_b}
        if set(op_a) != set(op_b):
            inputs.append(number)
        ops.extend(
            (number, source, op_a[source], op_b[source])
            for source in op_a
            if source in op_b and op_a[source] != op_b[source]
        )
    layers = [layer for layer, (x, y) in enumerate(zip(a.path, b.path), start=1) if x != y]
    return GenotypeDiff(tuple(blocks), tuple(inputs), tuple(ops), tuple(layers))


def genotype_changes(genotypes: Sequence[Genotype]) -> list[GenotypeDiff]:
    """The difference between each genotype and the one before it (``len - 1`` entries)."""
    return [diff_genotypes(a, b) for a, b in zip(genotypes[:-1], genotypes[1:])]


def stabilisation_epoch(genotypes: Sequence[Genotype], epochs: Sequence[int]) -> int:
    """The first epoch after which the decoded genotype never changes: the epoch of the
    earliest genotype equal to it and to every later one."""
    if len(genotypes) != len(epochs) or not genotypes:
        raise ValueError(f"need one genotype per epoch; got {len(genotypes)} and {len(epochs)}")
    first = len(genotypes) - 1
    while first > 0 and genotypes[first - 1] == genotypes[-1]:
        first -= 1
    return int(epochs[first])


def describe_changes(genotypes: Sequence[Genotype], epochs: Sequence[int]) -> str:
    """A text log of what changed after each epoch and when the genotype stabilised."""
    lines = []
    for epoch, diff in zip(epochs[1:], genotype_changes(genotypes)):
        if not diff.same:
            text = diff.describe().replace("\n", "\n    ")
            lines.append(f"epoch {epoch}:\n    {text}")
    if not lines:
        lines.append(f"no change over epochs {epochs[0]}..{epochs[-1]}")
    lines.append(f"stable from epoch {stabilisation_epoch(genotypes, epochs)}")
    return "\n".join(lines)
