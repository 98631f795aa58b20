"""The decoded cell drawn as a graph with matplotlib alone (no graphviz): inputs on the left,
blocks in ranks by dependency, ``concat`` (the cell's output, all blocks concatenated) last."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from autodeeplab.analysis.figures import new_figure, op_colour
from autodeeplab.analysis.run import SearchRun
from autodeeplab.genotype import Genotype

NODE_W, NODE_H = 1.5, 0.55  # node size in data units
X_STEP, Y_STEP = 4.0, 1.4  # distance between ranks, and between the nodes of a rank
INCH_PER_UNIT = 0.5
_CLEARANCE = 0.35  # gap between a bent edge and the nodes it passes
# Op labels: first tried at this fraction of the visible part of their edge, near the source
# (where the labels of two edges that cross between two ranks are still apart), then further
# along until they overlap no node and no other label; where every place overlaps something
# (many edges between two ranks), the place of least overlap, trying each twentieth.
_LABEL_AT = (0.3, 0.45, 0.6, 0.2, 0.75) + tuple(k / 20 for k in range(2, 19))
_CHAR_W, _LABEL_H = 0.12, 0.32  # size of a 7-point label in data units (per char; height)
_EDGES_PER_GAP = 4  # op edges a gap between ranks takes at X_STEP; more widen it in proportion

Point = tuple[float, float]


@dataclass(frozen=True)
class CellLayout:
    """Where everything of a cell graph goes (data units, equal aspect).

    ``positions``: node name -> centre; ``edges``: ``(source, target, op, rad)`` with ``op``
    ``None`` for the edges into ``concat`` and ``rad`` the arc3 curvature; ``labels``: the
    centre of each op label, in the order of the op edges; ``xlim``, ``ylim``.
    """

    positions: dict[str, Point]
    edges: tuple[tuple[str, str, str | None, float], ...]
    labels: tuple[Point, ...]
    xlim: tuple[float, float]
    ylim: tuple[float, float]

    def size(self) -> tuple[float, float]:
        """A figure size in inches that shows the graph at a readable scale."""
        width = (self.xlim[1] - self.xlim[0]) * INCH_PER_UNIT + 0.4
        return width, (self.ylim[1] - self.ylim[0]) * INCH_PER_UNIT + 0.7


def point_on_arc(start: Point, end: Point, rad: float, t: float) -> Point:
    """The point at ``t`` (0..1) of matplotlib's ``arc3`` curve (a quadratic Bezier curve whose
    control point is offset from the chord's middle by ``rad`` times the chord, turned)."""
    (x0, y0), (x1, y1) = start, end
    cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
    u = 1 - t
    return (u * u * x0 + 2 * u * t * cx + t * t * x1, u * u * y0 + 2 * u * t * cy + t * t * y1)


def _bend(
    start: Point, end: Point, ranks: dict[int, list[float]], rank_x: Sequence[float]
) -> float:
    """Curvature of an edge: 0 between neighbouring ranks; an edge that skips ranks bends away
    from the middle just enough to clear the nodes of the ranks it passes (rank ``r`` at
    ``x = rank_x[r]``)."""
    (x0, y0), (x1, y1) = start, end
    dx = x1 - x0
    up = y0 + y1 > 0 or (y0 + y1 == 0 and y0 >= 0)  # away from the middle, else the source's side
    need = 0.0
    for r in (r for r, x in enumerate(rank_x) if x0 < x < x1):
        s = (rank_x[r] - x0) / dx  # where the rank crosses the chord
        chord = y0 + s * (y1 - y0)
        edge = max(ranks[r]) if up else -min(ranks[r])
        gap = edge + NODE_H / 2 + _CLEARANCE - (chord if up else -chord)
        # arc3 moves the curve at t off the chord by 2 t (1 - t) |rad| dx vertically.
        need = max(need, gap / (2 * s * (1 - s) * dx))
    return -need if up else need


def cell_layout(genotype: Genotype) -> CellLayout:
    """The layout of ``genotype``'s cell: each block one rank right of its deepest input."""
    rank = {"prev_prev": 0, "prev": 0}
    for b, block in enumerate(genotype.cell, start=1):
        rank[f"block{b}"] = 1 + max(rank[e.input] for e in block)
    rank["concat"] = max(rank.values()) + 1
    # A gap that many op edges cross is widened, so that their labels can stagger along them.
    crossing = [0] * rank["concat"]
    for b, block in enumerate(genotype.cell, start=1):
        for edge in block:
            for gap in range(rank[edge.input], rank[f"block{b}"]):
                crossing[gap] += 1
    rank_x = [0.0]
    for count in crossing:
        rank_x.append(rank_x[-1] + X_STEP * max(1.0, count / _EDGES_PER_GAP))
    positions: dict[str, Point] = {}
    ranks: dict[int, list[float]] = {}
    for r in range(rank["concat"] + 1):
        names = [name for name, value in rank.items() if value == r]
        ranks[r] = [((len(names) - 1) / 2 - k) * Y_STEP for k in range(len(names))]
        positions.update({name: (rank_x[r], y) for name, y in zip(names, ranks[r])})
    edges = []
    for b, block in enumerate(genotype.cell, start=1):
        target = f"block{b}"
        for edge in block:
            rad = _bend(positions[edge.input], positions[target], ranks, rank_x)
            edges.append((edge.input, target, edge.op, rad))
        rad = _bend(positions[target], positions["concat"], ranks, rank_x)
        edges.append((target, "concat", None, rad))
    labels = _place_labels(positions, [e for e in edges if e[2] is not None])
    ys = [y for _, y in positions.values()] + [y for _, y in labels]
    ys += [point_on_arc(positions[a], positions[b], rad, 0.5)[1] for a, b, _, rad in edges]
    xlim = (-NODE_W, rank_x[-1] + NODE_W)
    return CellLayout(positions, tuple(edges), labels, xlim, (min(ys) - 0.7, max(ys) + 0.7))


def _place_labels(
    positions: dict[str, Point], edges: list[tuple[str, str, str | None, float]]
) -> tuple[Point, ...]:
    """A centre for each edge's op label on its curve: the first place (in :data:`_LABEL_AT`
    order) clear of nodes and earlier labels, else the one that overlaps them least."""
    taken = [(x, y, NODE_W + 0.1, NODE_H + 0.1) for x, y in positions.values()]
    placed = []
    for source, target, op, rad in edges:
        start, end = positions[source], positions[target]
        span = end[0] - start[0]
        width = _CHAR_W * len(op or "")
        options = [
            point_on_arc(start, end, rad, (NODE_W / 2 + f * (span - NODE_W)) / span)
            for f in _LABEL_AT
        ]
        x, y = min(options, key=lambda p: sum(_overlap_area(p, width, box) for box in taken))
        taken.append((x, y, width, _LABEL_H))
        placed.append((x, y))
    return tuple(placed)


def _overlap_area(centre: Point, width: float, box: tuple[float, float, float, float]) -> float:
    """How much a label of ``width`` at ``centre`` overlaps ``box`` (centre, width, height)."""
    x, y, w, h = box
    across = (width + w) / 2 - abs(centre[0] - x)
    down = (_LABEL_H + h) / 2 - abs(centre[1] - y)
    return max(across, 0.0) * max(down, 0.0)


def draw_cell(ax: Axes, genotype: Genotype, highlight: Collection[int] = ()) -> None:
    """The cell of ``genotype`` as a graph on ``ax``: one arrow per kept edge, coloured and
    labelled by its op, and dashed arrows from every block into ``concat``. Blocks in
    ``highlight`` (1-based numbers) are outlined in red."""
    layout = cell_layout(genotype)
    boxes = {}
    for name, (x, y) in layout.positions.items():
        block = int(name[5:]) if name.startswith("block") else 0
        boxes[name] = FancyBboxPatch(
            (x - NODE_W / 2, y - NODE_H / 2),
            NODE_W,
            NODE_H,
            boxstyle="round,pad=0.05",
            facecolor="#dbe9f6" if block else "#f2f2f2",
            edgecolor="red" if block in highlight else "0.3",
            lw=2.5 if block in highlight else 1,
            zorder=3,
        )
        ax.add_patch(boxes[name])
        ax.text(x, y, name, ha="center", va="center", fontsize=9, zorder=4, gid="node")
    labels = iter(layout.labels)
    for source, target, op, rad in layout.edges:
        style = {"color": op_colour(op), "lw": 1.6} if op else {"color": "0.65", "lw": 0.7}
        arrow = FancyArrowPatch(
            layout.positions[source],
            layout.positions[target],
            patchA=boxes[source],
            patchB=boxes[target],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=11,
            ls="-" if op else "--",
            gid="edge" if op else "concat",
            **style,
        )
        ax.add_patch(arrow)
        if op:
            x, y = next(labels)
            bbox = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}
            ax.text(
                x,
                y,
                op,
                ha="center",
                va="center",
                fontsize=7,
                color=style["color"],
                zorder=5,
                gid="op",
                bbox=bbox,
            )
    ax.set_xlim(*layout.xlim)
    ax.set_ylim(*layout.ylim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_cell(source: SearchRun | Genotype, epoch: int = -1) -> Figure:
    """The decoded cell of a run after ``epoch`` (-1: the last), or of a :class:`Genotype`."""
    if isinstance(source, Genotype):
        genotype, title = source, "cell"
    else:
        genotype = source.genotype_at(epoch)
        title = f"{source.name}: cell after epoch {source.epoch_number(epoch)}"
    fig = new_figure(*cell_layout(genotype).size())
    ax = fig.add_subplot()
    draw_cell(ax, genotype)
    ax.set_title(title)
    return fig
