"""Figures of the architecture parameters over a search: alpha, beta, their entropy and the
decoded genotype's changes. Each function takes a :class:`SearchRun` and returns a Figure."""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from autodeeplab.analysis.figures import layer_title, new_figure, op_colour, set_level_axis
from autodeeplab.analysis.run import SearchRun
from autodeeplab.analysis.stats import (
    alpha_entropy,
    alpha_weights,
    beta_entropy,
    beta_probabilities,
    genotype_changes,
    stabilisation_epoch,
)
from autodeeplab.decode import viterbi_path
from autodeeplab.space.edges import block_inputs, edge_row


def plot_alpha(run: SearchRun, epoch: int = -1) -> Figure:
    """Heatmap of alpha's softmax weights, edges x ops, after ``epoch`` (-1: the last); boxes
    mark the (edge, op) pairs the decoded cell keeps."""
    i = run.index(epoch)
    weights = alpha_weights(run.alpha[i])
    edges, ops = weights.shape
    fig = new_figure(2.5 + 0.7 * ops, 1.6 + 0.3 * edges)
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", aspect="auto")
    for (row, col), value in np.ndenumerate(weights):
        bright = value > weights.min() + 0.6 * np.ptp(weights)
        colour = "black" if bright else "white"
        ax.text(col, row, f"{value:.3f}", ha="center", va="center", fontsize=7, color=colour)
    for block, kept in enumerate(run.genotypes[i].cell, start=1):
        for edge in kept:
            xy = (run.op_names.index(edge.op) - 0.5, edge_row(block, edge.input) - 0.5)
            ax.add_patch(Rectangle(xy, 1, 1, fill=False, edgecolor="red", lw=2, gid="kept"))
    for block in range(1, run.blocks):  # separate the blocks' rows
        ax.axhline(edge_row(block + 1, "prev_prev") - 0.5, color="white", lw=1.5)
    ax.set_xticks(range(ops), run.op_names, rotation=40, ha="right")
    ax.set_yticks(range(edges), run.edge_names)
    ax.set_xlabel("op")
    ax.set_ylabel("edge (block <- input)")
    ax.set_title(f"{run.name}: alpha after epoch {run.epochs[i]} (red: kept edges)")
    fig.colorbar(image, ax=ax, label="softmax weight over ops")
    return fig


def plot_alpha_evolution(run: SearchRun) -> Figure:
    """One panel per edge (rows: blocks) with its op probabilities over the epochs; titles of
    the edges kept by the final genotype are bold."""
    weights = alpha_weights(run.alpha)  # (epochs, edges, ops)
    blocks = run.blocks
    fig = new_figure(2.2 * (blocks + 1) + 1.8, 1.7 * blocks + 0.6)
    grid = fig.subplots(blocks, blocks + 1, sharex=True, sharey=True, squeeze=False)
    kept = {(b, e.input) for b, block in enumerate(run.genotype.cell, 1) for e in block}
    lines = []
    for block in range(1, blocks + 1):
        inputs = block_inputs(block)
        for col, ax in enumerate(grid[block - 1]):
            if col >= len(inputs):
                fig.delaxes(ax)
                continue
            row = edge_row(block, inputs[col])
            for k, op in enumerate(run.op_names):
                (line,) = ax.plot(run.epochs, weights[:, row, k], "-o", ms=2, color=op_colour(op))
                lines.append(line)
            bold = (block, inputs[col]) in kept
            ax.set_title(run.edge_names[row], fontsize=9, fontweight="bold" if bold else "normal")
            if block == blocks:
                ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, not 2.5
            if col == 0:
                ax.set_ylabel("weight")
    fig.legend(lines[: len(run.op_names)], run.op_names, loc="outside right upper", fontsize=8)
    fig.suptitle(f"{run.name}: op probabilities of each edge (bold: kept at the end)")
    return fig


def plot_entropy(run: SearchRun) -> Figure:
    """Entropy of alpha (per edge) and beta (per node with a choice) per epoch, as a fraction of
    the uniform maximum: 1 is undecided, 0 is a single choice."""
    fig = new_figure(10, 3.8)
    ax_alpha, ax_beta = fig.subplots(1, 2, sharey=True)
    per_edge = alpha_entropy(run.alpha, normalised=True)  # (epochs, edges)
    per_node = beta_entropy(run.beta, normalised=True).reshape(len(run.epochs), -1)
    per_node = per_node[:, ~np.isnan(per_node).all(axis=0)]
    for ax, values, what in ((ax_alpha, per_edge, "edge"), (ax_beta, per_node, "node")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, 1.05)
        if values.shape[1] == 0:  # one level: every node has a single transition
            ax.set_xlim(run.epochs[0] - 0.5, run.epochs[-1] + 0.5)
            ax.text(0.5, 0.5, f"no {what} has a choice", ha="center", transform=ax.transAxes)
            continue
        ax.plot(run.epochs, values, color="0.75", lw=0.8)
        ax.plot(run.epochs, values.mean(axis=1), "-o", color="C3", lw=2.5, label="mean")
        ax.plot([], [], color="0.75", lw=0.8, label=f"one {what}")
        ax.legend(loc="lower left")
    ax_alpha.set_ylabel("entropy / uniform maximum")
    ax_alpha.set_title("alpha: op choice of each edge")
    ax_beta.set_title("beta: transition choice of each node")
    fig.suptitle(f"{run.name}: architecture entropy")
    return fig


def plot_beta(run: SearchRun, epoch: int = -1) -> Figure:
    """beta after ``epoch`` as transition probabilities, one panel per layer (rows: levels,
    columns: directions); red boxes mark the Viterbi path's transitions."""
    i = run.index(epoch)
    probabilities = beta_probabilities(run.beta[i])  # (L, levels, 3)
    mask = run.lattice.beta_mask().numpy()
    layers, levels, _ = probabilities.shape
    path = (0, *viterbi_path(run.beta[i])[0])
    cols = min(layers, 4)
    rows = math.ceil(layers / cols)
    fig = new_figure(2.6 * cols + 1.2, 0.55 * levels * rows + 1.4 * rows + 0.4)
    grid = fig.subplots(rows, cols, squeeze=False)
    for ax in grid.flat[layers:]:
        fig.delaxes(ax)
    image = None
    for layer, ax in enumerate(grid.flat[:layers]):
        shown = np.ma.masked_array(probabilities[layer], ~mask[layer])
        image = ax.imshow(shown, cmap="magma", vmin=0, vmax=1, aspect="auto")
        for (s, d), value in np.ndenumerate(probabilities[layer]):
            if mask[layer, s, d]:
                colour = "black" if value > 0.6 else "white"
                ax.text(d, s, f"{value:.2f}", ha="center", va="center", fontsize=8, color=colour)
        step = path[layer + 1] - path[layer] + 1
        ax.add_patch(
            Rectangle((step - 0.5, path[layer] - 0.5), 1, 1, fill=False, ec="red", lw=2, gid="path")
        )
        ax.set_facecolor("0.9")
        ax.set_xticks(range(3), run.direction_names)
        set_level_axis(ax, levels, label=layer % cols == 0)
        ax.set_xlabel("direction")
        ax.set_title(layer_title(layer), fontsize=10)
    fig.colorbar(image, ax=list(grid.flat[:layers]), label="transition probability")
    fig.suptitle(f"{run.name}: beta after epoch {run.epochs[i]} (red: Viterbi path)")
    return fig


def plot_genotype_changes(run: SearchRun) -> Figure:
    """Which blocks and path layers of the decoded genotype changed after each epoch ("in": the
    block's inputs changed, "op": only its ops; path cells show the level), and when the
    genotype stabilised."""
    genotypes, epochs = run.genotypes, run.epochs
    blocks, layers = run.blocks, run.lattice.layers
    changed = np.full((blocks + layers, len(epochs)), np.nan)
    changed[:, 1:] = 0
    fig = new_figure(max(6.5, 2.5 + 0.45 * len(epochs)), 1.4 + 0.3 * (blocks + layers))
    ax = fig.add_subplot()
    for t, diff in enumerate(genotype_changes(genotypes), start=1):
        for b in diff.blocks:
            changed[b - 1, t] = 1
            label = "in" if b in diff.inputs else "op"
            ax.text(t, b - 1, label, ha="center", va="center", fontsize=7, color="white")
        for layer in diff.layers:
            changed[blocks + layer - 1, t] = 1
    for t, genotype in enumerate(genotypes):
        for layer, level in enumerate(genotype.path):
            ax.text(t, blocks + layer, str(level), ha="center", va="center", fontsize=7)
    colours = ListedColormap(["#e6e6e6", "#d62728"])
    ax.imshow(np.ma.masked_invalid(changed), cmap=colours, vmin=0, vmax=1, aspect="auto")
    ax.set_facecolor("white")
    stable = stabilisation_epoch(genotypes, epochs)
    ax.axvline(epochs.index(stable) - 0.5, color="black", ls="--", lw=1.5)
    ax.axhline(blocks - 0.5, color="black", lw=0.8)
    ax.set_xticks(range(len(epochs)), [str(e) for e in epochs])
    names = [f"block{b}" for b in range(1, blocks + 1)]
    ax.set_yticks(range(blocks + layers), names + [f"layer {l}" for l in range(1, layers + 1)])
    ax.set_xlabel("epoch")
    ax.set_ylabel("genotype part")
    # Two lines: the figure is as narrow as 6.5 inches for a short search.
    ax.set_title(f"{run.name}: genotype changes (red),\nstable from epoch {stable} (dashed)")
    return fig
