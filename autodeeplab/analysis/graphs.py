"""Drawings of the network level: the lattice with its Viterbi path (as P Fig. 3), and two runs
side by side (cells and paths)."""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch

from autodeeplab.analysis.cellgraph import cell_layout, draw_cell
from autodeeplab.analysis.figures import new_figure, set_level_axis
from autodeeplab.analysis.run import SearchRun
from autodeeplab.analysis.stats import beta_probabilities, diff_genotypes
from autodeeplab.decode import viterbi_path
from autodeeplab.space.lattice import Lattice


def draw_lattice(ax: Axes, lattice: Lattice) -> None:
    """The nodes ``(layer, level)`` of ``lattice`` (layer 0: the stem) on ``ax``, levels on the
    y-axis labelled by output stride."""
    nodes = [(0, 0), *lattice.nodes]
    ax.scatter([l for l, _ in nodes], [s for _, s in nodes], s=40, color="0.3", zorder=3)
    set_level_axis(ax, lattice.levels)
    ticks = range(lattice.layers + 1)
    ax.set_xticks(ticks, ["stem", *(str(l) for l in ticks[1:])])
    ax.set_xlim(-0.4, lattice.layers + 0.4)
    ax.set_xlabel("layer")


def draw_path(ax: Axes, path: tuple[int, ...], **style: object) -> Line2D:
    """A network path (levels of layers ``1..L``) from the stem as one line of ``L`` segments."""
    (line,) = ax.plot(range(len(path) + 1), (0, *path), zorder=4, **style)
    return line


def plot_lattice(run: SearchRun, epoch: int = -1) -> Figure:
    """The lattice after ``epoch``: a thin arrow for each node's strongest outgoing transition
    and the Viterbi path from the stem in bold."""
    i = run.index(epoch)
    lattice = run.lattice
    probabilities = beta_probabilities(run.beta[i])
    path, probability = viterbi_path(run.beta[i])
    # At least wide enough for the title and the legend, also for a lattice of a few layers.
    fig = new_figure(max(5.0, 1.6 + 0.75 * lattice.layers), 1.6 + 0.6 * lattice.levels)
    ax = fig.add_subplot()
    draw_lattice(ax, lattice)
    for layer, level in sorted({(l, s) for l, s, _ in lattice.transitions}):  # nodes with exits
        direction = int(np.argmax(probabilities[layer, level]))
        target = lattice.target_level(level, direction)
        arrow = FancyArrowPatch(
            (layer, level),
            (layer + 1, target),
            arrowstyle="-|>",
            mutation_scale=10,
            lw=0.9,
            color="0.45",
            shrinkA=5,
            shrinkB=5,
            gid="strongest",
        )
        ax.add_patch(arrow)
    draw_path(
        ax, path, color="C3", lw=4, gid="viterbi", label=f"Viterbi path (p = {probability:.3g})"
    )
    ax.plot([], [], color="0.45", lw=0.9, label="strongest transition of each node")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{run.name}: network path after epoch {run.epochs[i]}")
    return fig


def plot_comparison(
    run_a: SearchRun, run_b: SearchRun, epoch: int = -1, labels: tuple[str, str] | None = None
) -> Figure:
    """Two runs side by side after ``epoch``: their cells (blocks that differ outlined in red)
    and their network paths on one lattice (layers where they differ marked)."""
    if run_a.lattice != run_b.lattice:
        raise ValueError(
            f"cannot compare runs of different lattices: {run_a.lattice}, {run_b.lattice}"
        )
    a, b = run_a.genotype_at(epoch), run_b.genotype_at(epoch)
    diff = diff_genotypes(a, b)
    labels = labels or (f"A: {run_a.name}", f"B: {run_b.name}")
    (w_a, h_a), (w_b, h_b) = cell_layout(a).size(), cell_layout(b).size()
    layers, levels = run_a.lattice.layers, run_a.lattice.levels
    fig = new_figure(max(w_a + w_b, 1.6 + 0.9 * layers), max(h_a, h_b) + 1.6 + 0.6 * levels)
    grid = fig.add_gridspec(2, 2, height_ratios=[max(h_a, h_b), 1.0 + 0.6 * levels])
    for k, (genotype, label) in enumerate(zip((a, b), labels)):
        ax = fig.add_subplot(grid[0, k])
        draw_cell(ax, genotype, highlight=diff.blocks)
        ax.set_title(f"{label}: cell")
    ax = fig.add_subplot(grid[1, :])
    draw_lattice(ax, run_a.lattice)
    draw_path(ax, a.path, color="C3", lw=6, alpha=0.55, gid="path_a", label=labels[0])
    draw_path(ax, b.path, color="C0", lw=2, gid="path_b", label=labels[1])
    if diff.layers:
        xs = [l for l in diff.layers for _ in range(2)]
        ys = [p[l - 1] for l in diff.layers for p in (a.path, b.path)]
        ax.scatter(xs, ys, s=160, facecolors="none", edgecolors="black", zorder=5, label="differ")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title("network paths")
    epoch_a, epoch_b = run_a.epoch_number(epoch), run_b.epoch_number(epoch)
    if epoch_a == epoch_b:
        runs = f"{labels[0]} vs {labels[1]} after epoch {epoch_a}"
    else:  # runs of different lengths, each at its own last (or n-th from last) epoch
        runs = f"{labels[0]} after epoch {epoch_a} vs {labels[1]} after epoch {epoch_b}"
    fig.suptitle(
        f"{runs}: {len(diff.blocks)} of {a.blocks} blocks and {len(diff.layers)} of "
        f"{a.layers} layers differ"
    )
    return fig
