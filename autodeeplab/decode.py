"""Decoding: pure functions from architecture parameters to a :class:`Genotype` [P §4.3].

No modules, no devices: alpha and beta may be tensors or arrays; they are read as float64 numpy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from autodeeplab.genotype import Edge, Genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.edges import block_inputs, edge_row, num_edges
from autodeeplab.space.lattice import Lattice

_NONE = PRIMITIVES.index("none")


def as_array(x: Any) -> np.ndarray:
    """``x`` (a tensor, also one that requires grad, an array or nested lists) as float64 numpy."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def op_probabilities(alpha: Any) -> np.ndarray:
    """Softmax of alpha logits over ops (the last axis), as float64 numpy; any leading shape,
    e.g. ``(edges, ops)`` or a history ``(epochs, edges, ops)``."""
    x = as_array(alpha)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _check_finite(name: str, values: np.ndarray, where: np.ndarray | None = None) -> None:
    """Raises ``ValueError`` where ``values`` (those under the mask ``where``) are not finite:
    a diverged search, whose decoding would be arbitrary."""
    bad = ~np.isfinite(values)
    if where is not None:
        bad &= where
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite entries (the first at index {first}, "
            f"{values[first]}): the search diverged and its architecture cannot be decoded"
        )


#: Difference of two log-probabilities (edges' strengths in :func:`decode_cell`, paths in
#: :func:`viterbi_path`) below which they count as a tie: far above the rounding of a softmax or
#: of a sum of a few dozen logarithms, far below any difference a search makes.
TIE_TOLERANCE = 1e-9


def _beats(candidate: float, best: float) -> bool:
    """Whether log-probability ``candidate`` is larger than ``best`` by more than a tie: by
    more than :data:`TIE_TOLERANCE`, relative where they are below -1, else absolute."""
    if candidate == -np.inf or candidate <= best:
        return False
    return best == -np.inf or candidate - best > TIE_TOLERANCE * max(1.0, abs(best))


def blocks_for_edges(edges: int) -> int:
    """The number of blocks B whose cell has ``edges`` edges (20 -> 5)."""
    blocks = 0
    while num_edges(blocks) < edges:
        blocks += 1
    if num_edges(blocks) != edges:
        raise ValueError(
            f"alpha has {edges} rows, which is no cell's edge count (2, 5, 9, 14, 20, ...)"
        )
    return blocks


def decode_cell(alpha: Any, keep: int = 2) -> tuple[tuple[Edge, ...], ...]:
    """Top-``keep`` edges per block from alpha logits ``(edges, ops)``.

    An edge's strength is its largest non-``none`` softmax weight; ties go to the lower edge
    index (strengths whose logarithms agree to :data:`TIE_TOLERANCE` are ties: equal logits
    in another order can give softmax weights that differ in their last bit). Each kept
    edge takes its argmax op excluding ``none``. Kept edges are listed in input order
    (``prev_prev``, ``prev``, ``block1``, ...).
    """
    logits = as_array(alpha)
    if logits.ndim != 2 or logits.shape[1] != len(PRIMITIVES):
        raise ValueError(f"alpha must have shape (edges, {len(PRIMITIVES)}), got {logits.shape}")
    _check_finite("alpha", logits)
    weights = op_probabilities(logits)
    real = weights.copy()
    real[:, _NONE] = -np.inf
    cell = []
    for block in range(1, blocks_for_edges(weights.shape[0]) + 1):
        inputs = block_inputs(block)
        rows = [edge_row(block, name) for name in inputs]
        with np.errstate(divide="ignore"):  # compared as logarithms (see _beats)
            strength = np.log(real[rows].max(axis=1))
        left, kept = list(range(len(rows))), []
        while left and len(kept) < keep:  # the strongest left, the lowest index among ties
            top = max(strength[k] for k in left)
            kept.append(next(k for k in left if not _beats(top, strength[k])))
            left.remove(kept[-1])
        kept.sort()
        cell.append(tuple(Edge(PRIMITIVES[int(real[rows[k]].argmax())], inputs[k]) for k in kept))
    return tuple(cell)


def viterbi_path(beta: Any) -> tuple[tuple[int, ...], float]:
    """The most probable network path under normalised beta, and its probability.

    ``beta``: logits ``(L, levels, 3)``, normalised per node over its existing directions. The
    path starts at the stem (level 0, layer 0), takes ``L`` transitions and ends at the best level;
    it is returned as the level of layers ``1..L``. Ties between paths of equal probability
    go to the lower level: each node keeps its predecessor at the lowest level among the best,
    and the path ends at the lowest of the best levels. Log-probabilities that agree to
    :data:`TIE_TOLERANCE` count as equal: the same product summed in another
    order can differ in its last bit, which would otherwise decide the tie.
    """
    logits = as_array(beta)
    if logits.ndim != 3 or logits.shape[2] != 3:
        raise ValueError(f"beta must have shape (layers, levels, 3), got {logits.shape}")
    layers, levels, _ = logits.shape
    lattice = Lattice(layers, levels)
    _check_finite("beta", logits, lattice.beta_mask().numpy())  # entries of real transitions
    with np.errstate(divide="ignore"):  # log 0 = -inf where there is no transition
        log_p = np.log(transition_probabilities(logits, lattice))
    score = np.full(levels, -np.inf)
    score[0] = 0.0
    back = np.zeros((layers, levels), dtype=np.int64)
    for l in range(layers):
        new = np.full(levels, -np.inf)
        for s in range(levels):
            for d in range(3):
                t = s + d - 1
                if 0 <= t < levels and _beats(score[s] + log_p[l, s, d], new[t]):
                    new[t] = score[s] + log_p[l, s, d]
                    back[l, t] = s
        score = new
    level = next(s for s in range(levels) if not _beats(score.max(), score[s]))
    probability = math.exp(score[level])
    path = [level]
    for l in range(layers - 1, 0, -1):
        level = int(back[l, level])
        path.append(level)
    return tuple(reversed(path)), probability


def transition_probabilities(beta: Any, lattice: Lattice | None = None) -> np.ndarray:
    """Normalised beta as numpy ``(L, levels, 3)``: softmax over each node's existing
    directions, 0 elsewhere (the same normalisation as the supernet's forward pass)."""
    logits = as_array(beta)
    if logits.ndim != 3 or logits.shape[2] != 3:
        raise ValueError(f"beta must have shape (layers, levels, 3), got {logits.shape}")
    lattice = lattice or Lattice(logits.shape[0], logits.shape[1])
    mask = lattice.beta_mask().numpy()
    filled = np.where(mask, logits, -np.inf)
    peak = np.where(mask.any(-1, keepdims=True), filled.max(-1, keepdims=True), 0.0)
    e = np.where(mask, np.exp(filled - peak), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def decode(alpha: Any, beta: Any, *, meta: dict[str, Any] | None = None) -> Genotype:
    """alpha ``(edges, ops)`` and beta ``(L, levels, 3)`` logits -> :class:`Genotype`.

    ``meta`` records the path probability under beta plus anything passed in.
    """
    path, probability = viterbi_path(beta)
    extra = {"path_probability": probability, **(meta or {})}
    return Genotype(decode_cell(alpha), path, extra)
