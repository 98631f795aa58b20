"""Every figure on a `smoke` run: its axes, titles, labels, ticks and what is drawn."""

import dataclasses

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from autodeeplab import PRIMITIVES, Genotype, Lattice, cell_edges
from autodeeplab.analysis import (
    cell_layout,
    diff_genotypes,
    plot_alpha,
    plot_alpha_evolution,
    plot_beta,
    plot_cell,
    plot_comparison,
    plot_entropy,
    plot_genotype_changes,
    plot_lattice,
    stabilisation_epoch,
)
from autodeeplab.analysis.figures import op_colour
from autodeeplab.analysis.stats import alpha_entropy, beta_probabilities
from autodeeplab.decode import viterbi_path
from autodeeplab.space.edges import edge_row

STRIDES = ["4", "8", "16"]


def _ticks(labels):
    return [t.get_text() for t in labels]


def _with_gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


def test_alpha_heatmap(smoke_run):
    fig = plot_alpha(smoke_run)
    assert isinstance(fig, Figure)
    assert fig._repr_png_().startswith(b"\x89PNG")  # shows itself in Jupyter
    ax, colorbar = fig.axes
    assert "alpha after epoch 3" in ax.get_title()
    assert ax.get_xlabel() == "op" and ax.get_ylabel() == "edge (block <- input)"
    assert _ticks(ax.get_xticklabels()) == list(PRIMITIVES)
    assert _ticks(ax.get_yticklabels()) == cell_edges(3)
    assert colorbar.get_ylabel() == "softmax weight over ops"
    boxes = _with_gid(ax.patches, "kept")
    expected = {
        (PRIMITIVES.index(e.op), edge_row(b, e.input))
        for b, block in enumerate(smoke_run.genotype.cell, 1)
        for e in block
    }
    assert {(r.get_x() + 0.5, r.get_y() + 0.5) for r in boxes} == expected
    assert "epoch 1" in plot_alpha(smoke_run, epoch=1).axes[0].get_title()
    with pytest.raises(ValueError, match="epoch 7"):
        plot_alpha(smoke_run, epoch=7)


def test_alpha_evolution_has_one_panel_per_edge(smoke_run):
    fig = plot_alpha_evolution(smoke_run)
    assert len(fig.axes) == 9
    assert [ax.get_title() for ax in fig.axes] == cell_edges(3)
    for ax in fig.axes:
        assert len(ax.lines) == len(PRIMITIVES)
        np.testing.assert_array_equal(ax.lines[0].get_xdata(), [1, 2, 3])
    bold = {ax.get_title() for ax in fig.axes if ax.title.get_fontweight() == "bold"}
    kept = {f"block{b}<-{e.input}" for b, blk in enumerate(smoke_run.genotype.cell, 1) for e in blk}
    assert bold == kept
    assert {ax.get_xlabel() for ax in fig.axes[-4:]} == {"epoch"}
    assert _ticks(fig.legends[0].get_texts()) == list(PRIMITIVES)
    # Epoch ticks are whole numbers (a 10-epoch search had ticks at 2.5 and 7.5).
    fig = plot_alpha_evolution(dataclasses.replace(smoke_run, epochs=(1, 4, 10)))
    fig.canvas.draw()
    ticks = fig.axes[-1].get_xticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_entropy_per_epoch(smoke_run):
    fig = plot_entropy(smoke_run)
    ax_alpha, ax_beta = fig.axes
    assert ax_alpha.get_title() == "alpha: op choice of each edge"
    assert ax_beta.get_title() == "beta: transition choice of each node"
    assert ax_alpha.get_xlabel() == ax_beta.get_xlabel() == "epoch"
    assert ax_alpha.get_ylabel() == "entropy / uniform maximum"
    mean = [line for line in ax_alpha.lines if line.get_label() == "mean"][0]
    np.testing.assert_allclose(mean.get_ydata(), alpha_entropy(smoke_run.alpha).mean(1) / np.log(8))
    # beta: one thin line per node with a choice (6 in the 3 x 3 lattice), plus mean and legend.
    assert len(ax_beta.lines) == 6 + 2


def test_beta_per_layer(smoke_run):
    fig = plot_beta(smoke_run)
    layers = fig.axes[:3]
    assert len(fig.axes) == 4  # three layers and the colour bar
    assert [ax.get_title() for ax in layers] == [
        "stem -> layer 1",
        "layer 1 -> layer 2",
        "layer 2 -> layer 3",
    ]
    for ax in layers:
        assert _ticks(ax.get_xticklabels()) == ["finer", "same", "coarser"]
        assert _ticks(ax.get_yticklabels()) == STRIDES
        assert ax.get_xlabel() == "direction"
    assert layers[0].get_ylabel() == "output stride"
    path = (0, *smoke_run.genotype.path)
    for layer, ax in enumerate(layers):
        (box,) = _with_gid(ax.patches, "path")
        step = path[layer + 1] - path[layer] + 1
        assert (box.get_x() + 0.5, box.get_y() + 0.5) == (step, path[layer])
    # Only existing transitions are annotated: 2 + 5 + 7 in the 3 x 3 lattice.
    assert [len(ax.texts) for ax in layers] == [2, 5, 7]


def _strongest(run, lattice):
    p = beta_probabilities(run.beta[-1])
    return {
        ((l, s), (l + 1, s + int(np.argmax(p[l, s])) - 1))
        for l, s in [(0, 0), *lattice.nodes]
        if l < lattice.layers
    }


def test_lattice_with_viterbi_path(smoke_run):
    fig = plot_lattice(smoke_run)
    (ax,) = fig.axes
    assert "network path after epoch 3" in ax.get_title()
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "output stride"
    assert _ticks(ax.get_xticklabels()) == ["stem", "1", "2", "3"]
    assert _ticks(ax.get_yticklabels()) == STRIDES
    assert ax.yaxis_inverted()  # finer levels on top, as in the paper
    (path,) = _with_gid(ax.lines, "viterbi")
    np.testing.assert_array_equal(path.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_array_equal(path.get_ydata(), (0, *smoke_run.genotype.path))
    arrows = _with_gid(ax.patches, "strongest")
    assert len(arrows) == 1 + 2 + 3  # every node of layers 0..L-1
    assert {tuple(map(tuple, a._posA_posB)) for a in arrows} == _strongest(smoke_run, Lattice(3, 3))


def test_entropy_of_a_one_level_search_says_no_node_has_a_choice(smoke_run, recwarn):
    run = dataclasses.replace(smoke_run, beta=np.zeros((len(smoke_run.epochs), 3, 1, 3)))
    ax_alpha, ax_beta = plot_entropy(run).axes
    assert [t.get_text() for t in ax_beta.texts] == ["no node has a choice"]
    assert not ax_beta.lines and len(ax_alpha.lines) > 2
    assert ax_beta.get_xlim() == (smoke_run.epochs[0] - 0.5, smoke_run.epochs[-1] + 0.5)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_short_lattice_leaves_room_for_its_title_and_legend(smoke_run):
    run = dataclasses.replace(smoke_run, beta=np.zeros((len(smoke_run.epochs), 1, 3, 3)))
    fig = plot_lattice(run)
    assert fig.get_figwidth() >= 5.0
    fig.canvas.draw()
    legend = fig.axes[0].get_legend().get_window_extent()
    assert 0 <= legend.x0 and legend.x1 <= fig.bbox.width


def test_op_colours_are_distinct_and_never_the_red_of_kept_edges():
    colours = [to_rgb(op_colour(op)) for op in PRIMITIVES]
    assert len(set(colours)) == len(PRIMITIVES)
    assert to_rgb("C3") not in colours and to_rgb("red") not in colours


def test_lattice_follows_the_lattice_for_any_size(smoke_run):
    """The paper's 12 x 4 lattice: nothing is special-cased per layer."""
    beta = np.random.default_rng(0).normal(size=(1, 12, 4, 3))
    run = dataclasses.replace(smoke_run, beta=beta, epochs=(1,))
    lattice = Lattice(12, 4)
    ax = plot_lattice(run).axes[0]
    arrows = _with_gid(ax.patches, "strongest")
    assert len(arrows) == 1 + sum(len(lattice.levels_at(l)) for l in range(1, 12))
    assert {tuple(map(tuple, a._posA_posB)) for a in arrows} == _strongest(run, lattice)
    (path,) = _with_gid(ax.lines, "viterbi")
    assert len(path.get_xdata()) - 1 == 12  # one segment per layer, from the stem
    np.testing.assert_array_equal(path.get_ydata(), (0, *viterbi_path(beta[0])[0]))
    assert _ticks(ax.get_yticklabels()) == ["4", "8", "16", "32"]


def test_cell_graph(smoke_run):
    fig = plot_cell(smoke_run)
    (ax,) = fig.axes
    assert ax.get_title() == "smoke_seed0: cell after epoch 3"
    genotype = smoke_run.genotype
    ops = sorted(t.get_text() for t in _with_gid(ax.texts, "op"))
    assert ops == sorted(e.op for block in genotype.cell for e in block)
    nodes = {t.get_text() for t in _with_gid(ax.texts, "node")}
    assert nodes == {"prev_prev", "prev", "block1", "block2", "block3", "concat"}
    assert len(_with_gid(ax.patches, "edge")) == 6
    assert len(_with_gid(ax.patches, "concat")) == 3
    assert all(isinstance(p, FancyArrowPatch) for p in _with_gid(ax.patches, "edge"))


@pytest.mark.parametrize("name", ["smoke", "paper"])
def test_cell_layout_puts_every_block_right_of_its_inputs(smoke_run, name):
    genotype = smoke_run.genotype if name == "smoke" else Genotype.named("paper")
    layout = cell_layout(genotype)
    x = {node: xy[0] for node, xy in layout.positions.items()}
    for b, block in enumerate(genotype.cell, 1):
        assert all(x[e.input] < x[f"block{b}"] < x["concat"] for e in block)
    assert len(layout.edges) == 3 * genotype.blocks  # two kept edges and one into concat each
    assert len(set(layout.positions.values())) == len(layout.positions)  # no node on another
    fig = plot_cell(genotype)
    assert len(_with_gid(fig.axes[0].texts, "op")) == 2 * genotype.blocks


#: Every block reads both cell inputs: eleven op edges between the first two ranks.
_CROWDED = {
    "format": "autodeeplab-genotype-v1",
    "cell": [
        [{"op": "skip_connect", "input": "prev_prev"}, {"op": "sep_conv_5x5", "input": "prev"}],
        [{"op": "skip_connect", "input": "prev_prev"}, {"op": "sep_conv_5x5", "input": "prev"}],
        [{"op": "skip_connect", "input": "prev_prev"}, {"op": "sep_conv_5x5", "input": "prev"}],
        [
            {"op": "skip_connect", "input": "prev_prev"},
            {"op": "atrous_conv_3x3", "input": "block3"},
        ],
        [{"op": "skip_connect", "input": "prev_prev"}, {"op": "atrous_conv_3x3", "input": "prev"}],
    ],
    "path": [0, 0, 0, 0, 0, 1],
}


@pytest.mark.parametrize("name", ["paper", "crowded"])
def test_op_labels_overlap_neither_each_other_nor_a_node(name):
    from autodeeplab.analysis.cellgraph import _CHAR_W, _LABEL_H, NODE_H, NODE_W

    genotype = Genotype.named("paper") if name == "paper" else Genotype.from_dict(_CROWDED)
    layout = cell_layout(genotype)
    ops = [op for _, _, op, _ in layout.edges if op is not None]
    boxes = [(x, y, _CHAR_W * len(op), _LABEL_H) for (x, y), op in zip(layout.labels, ops)]
    nodes = [(x, y, NODE_W, NODE_H) for x, y in layout.positions.values()]

    def apart(a, b):
        return abs(a[0] - b[0]) >= (a[2] + b[2]) / 2 or abs(a[1] - b[1]) >= (a[3] + b[3]) / 2

    for i, label in enumerate(boxes):
        assert all(apart(label, other) for other in boxes[i + 1 :]), ops[i]
        assert all(apart(label, node) for node in nodes), ops[i]


def test_genotype_changes(smoke_run):
    fig = plot_genotype_changes(smoke_run)
    (ax,) = fig.axes
    stable = stabilisation_epoch(smoke_run.genotypes, smoke_run.epochs)
    assert f"stable from epoch {stable}" in ax.get_title()
    assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "genotype part"
    assert _ticks(ax.get_xticklabels()) == ["1", "2", "3"]
    assert _ticks(ax.get_yticklabels()) == [
        "block1",
        "block2",
        "block3",
        "layer 1",
        "layer 2",
        "layer 3",
    ]
    (line,) = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert line.get_xdata()[0] == smoke_run.epochs.index(stable) - 0.5
    # The image marks changed parts with 1: compare with the genotype files directly.
    image = ax.images[0].get_array()
    for t in range(1, 3):
        before, after = smoke_run.genotypes[t - 1], smoke_run.genotypes[t]
        for b in range(3):
            assert image[b, t] == (before.cell[b] != after.cell[b])
            assert image[3 + b, t] == (before.path[b] != after.path[b])
    assert np.ma.getmaskarray(image)[:, 0].all()  # the first epoch has nothing to compare with


def test_comparison_of_two_seeds(smoke_run, smoke_run_seed1):
    fig = plot_comparison(smoke_run, smoke_run_seed1)
    assert len(fig.axes) == 3
    cell_a, cell_b, paths = fig.axes
    assert cell_a.get_title() == "A: smoke_seed0: cell"
    assert cell_b.get_title() == "B: smoke_seed1: cell"
    assert paths.get_title() == "network paths" and paths.get_xlabel() == "layer"
    (line_a,) = _with_gid(paths.lines, "path_a")
    (line_b,) = _with_gid(paths.lines, "path_b")
    np.testing.assert_array_equal(line_a.get_ydata(), (0, *smoke_run.genotype.path))
    np.testing.assert_array_equal(line_b.get_ydata(), (0, *smoke_run_seed1.genotype.path))
    diff = diff_genotypes(smoke_run.genotype, smoke_run_seed1.genotype)
    title = fig.get_suptitle()
    assert f"{len(diff.blocks)} of 3 blocks and {len(diff.layers)} of 3 layers differ" in title
    boxes = [p for p in cell_a.patches if p.get_gid() is None]  # the nodes; arrows have gids
    red = [p for p in boxes if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert len(red) == len(diff.blocks)
    same = plot_comparison(smoke_run, smoke_run)
    assert "0 of 3 blocks and 0 of 3 layers differ" in same.get_suptitle()
    assert f"smoke_seed0 vs B: smoke_seed0 after epoch {smoke_run.epochs[-1]}:" in (
        same.get_suptitle()
    )
    # A run cut short: each run's title epoch is its own.
    short = dataclasses.replace(
        smoke_run_seed1,
        alpha=smoke_run_seed1.alpha[:-1],
        beta=smoke_run_seed1.beta[:-1],
        epochs=smoke_run_seed1.epochs[:-1],
        genotypes=smoke_run_seed1.genotypes[:-1],
    )
    title = plot_comparison(smoke_run, short).get_suptitle()
    last = smoke_run.epochs[-1]
    assert f"A: smoke_seed0 after epoch {last} vs B: smoke_seed1 after epoch {last - 1}:" in title
