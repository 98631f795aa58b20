"""Shared figure plumbing: a Figure that shows itself in Jupyter, colours and axis labels.

Figures are plain :class:`matplotlib.figure.Figure` objects, never pyplot's global state: nothing
here selects a backend or opens a window.
"""

from __future__ import annotations

import io

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from autodeeplab.ops import PRIMITIVES


class AnalysisFigure(Figure):
    """A :class:`~matplotlib.figure.Figure` that Jupyter renders as PNG when it is a cell's last
    expression, whatever the matplotlib backend (no ``%matplotlib`` magic, no pyplot)."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        return buffer.getvalue()


def new_figure(width: float, height: float) -> AnalysisFigure:
    """An empty figure of ``width x height`` inches with constrained layout."""
    return AnalysisFigure(figsize=(width, height), layout="constrained")


#: One colour per op of :data:`autodeeplab.ops.PRIMITIVES`, in its order: matplotlib's cycle
#: without red (``C3``), which the figures keep for what is kept, chosen or different.
OP_COLOURS = ("C7", "C0", "C1", "C2", "C4", "C5", "C6", "C9")


def op_colour(op: str) -> str:
    """A fixed colour per op of :data:`autodeeplab.ops.PRIMITIVES` (the same in every figure),
    never the red that marks kept edges, paths and differences."""
    return OP_COLOURS[PRIMITIVES.index(op)]


def stride(level: int) -> int:
    """The output stride of ``level`` (level 0 is stride 4) [P §3.2]."""
    return 4 * 2**level


def set_level_axis(ax: Axes, levels: int, *, label: bool = True) -> None:
    """y-axis of levels labelled by output stride, finer levels on top (as in P Fig. 3)."""
    ax.set_yticks(range(levels), [str(stride(s)) for s in range(levels)])
    ax.set_ylim(levels - 0.5, -0.5)
    if label:
        ax.set_ylabel("output stride")


def layer_title(layer: int) -> str:
    """Name of the transitions leaving ``layer`` (layer 0 is the stem)."""
    return f"{'stem' if layer == 0 else f'layer {layer}'} -> layer {layer + 1}"
