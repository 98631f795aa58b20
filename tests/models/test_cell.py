"""The decoded cell: each edge reads the input its genotype names; stride and upsample shapes."""

from __future__ import annotations

import pytest
import torch

from autodeeplab.genotype import Edge, Genotype
from autodeeplab.models.cell import CELL_INPUTS, DecodedCell, double_size
from autodeeplab.ops import PRIMITIVES, AtrousConv, SepConv

PAPER = Genotype.named("paper")

# Edges listed against input order (later input first) in every block.
REVERSED_CELL = (
    (Edge("sep_conv_3x3", "prev"), Edge("atrous_conv_5x5", "prev_prev")),
    (Edge("atrous_conv_3x3", "prev"), Edge("sep_conv_5x5", "prev_prev")),
    (Edge("max_pool_3x3", "block2"), Edge("sep_conv_3x3", "prev_prev")),
    (Edge("sep_conv_5x5", "block3"), Edge("avg_pool_3x3", "block1")),
    (Edge("skip_connect", "block4"), Edge("atrous_conv_3x3", "block2")),
)


def _cell(cell=PAPER.cell, c_pp=6, c_p=10, channels=4, **kwargs) -> DecodedCell:
    return DecodedCell(cell, c_pp, c_p, channels, **kwargs).eval()


@pytest.mark.parametrize("downsample", [False, True])
def test_each_edge_reads_the_input_its_genotype_names(downsample):
    cell = _cell(REVERSED_CELL, downsample=downsample)
    seen: dict[tuple[int, int], torch.Tensor] = {}
    for b, ops in enumerate(cell.ops):
        for e, op in enumerate(ops):
            op.register_forward_hook(
                lambda mod, args, out, key=(b, e): seen.__setitem__(key, args[0])
            )
    prev_prev, prev = torch.randn(2, 6, 9, 9), torch.randn(2, 10, 9, 9)
    out = cell(prev_prev, prev)
    states = {
        "prev_prev": cell.preprocess_prev_prev(prev_prev),
        "prev": cell.preprocess_prev(prev),
    }
    blocks = out.chunk(len(REVERSED_CELL), dim=1)
    states.update({f"block{k}": blocks[k - 1] for k in range(1, len(blocks))})
    for b, block in enumerate(REVERSED_CELL):
        for e, edge in enumerate(block):
            torch.testing.assert_close(seen[b, e], states[edge.input], rtol=0, atol=0)
        # The block is the sum of its two ops, each applied to its named input (by hand).
        expected = sum(cell.ops[b][e](states[edge.input]) for e, edge in enumerate(block))
        torch.testing.assert_close(blocks[b], expected)


def test_edge_order_does_not_change_the_cell():
    """The same cell written in the opposite edge order computes the same function."""
    listed = _cell(REVERSED_CELL)
    normalised = Genotype(REVERSED_CELL, (0,)).cell  # Genotype sorts edges into input order
    assert [e.input for e in normalised[0]] == ["prev_prev", "prev"]
    ordered = _cell(normalised)
    state = {}
    for key, value in listed.state_dict().items():
        if key.startswith("ops."):
            _, b, e, rest = key.split(".", 3)
            key = f"ops.{b}.{1 - int(e)}.{rest}"  # the two edges of every block swap places
        state[key] = value
    ordered.load_state_dict(state)
    x_pp, x_p = torch.randn(1, 6, 7, 7), torch.randn(1, 10, 7, 7)
    torch.testing.assert_close(ordered(x_pp, x_p), listed(x_pp, x_p))


@pytest.mark.parametrize(
    ("pp_size", "p_size", "flags", "out_size"),
    [
        ((41, 41), (21, 21), {}, (21, 21)),  # same level; prev_prev from a finer level
        ((161, 161), (81, 81), {"downsample": True}, (41, 41)),  # cell 0 going to level 1
        ((41, 41), (41, 41), {"downsample": True}, (21, 21)),
        ((33, 49), (17, 25), {"downsample": True}, (9, 13)),
        ((11, 11), (11, 11), {"upsample": True}, (21, 21)),  # 11 -> 21, prev_prev resized too
        ((5, 7), (3, 4), {"upsample": True}, (5, 7)),
    ],
)
def test_output_shapes(pp_size, p_size, flags, out_size):
    cell = _cell(**flags)
    out = cell(torch.randn(2, 6, *pp_size), torch.randn(2, 10, *p_size))
    assert out.shape == (2, 5 * 4, *out_size)


def test_every_op_at_stride_two():
    ops = [op for op in PRIMITIVES if op != "none"]
    blocks = [(Edge(ops[i], "prev_prev"), Edge(ops[(i + 1) % len(ops)], "prev")) for i in range(4)]
    blocks.append((Edge(ops[4], "prev"), Edge(ops[5], "block4")))
    cell = _cell(tuple(blocks), downsample=True)
    for size, half in [(9, 5), (10, 5)]:
        out = cell(torch.randn(1, 6, size, size), torch.randn(1, 10, size, size))
        assert out.shape == (1, 20, half, half)


def test_stride_two_only_on_ops_reading_the_cell_inputs():
    cell = _cell(downsample=True)
    for block, ops in zip(PAPER.cell, cell.ops):
        for edge, op in zip(block, ops):
            if isinstance(op, SepConv):
                stride = op[0].depthwise.stride[0]
            else:
                assert isinstance(op, AtrousConv)
                stride = op.stride
            assert stride == (2 if edge.input in CELL_INPUTS else 1)


def test_projections():
    cell = _cell(c_pp=4, c_p=4, channels=4)
    assert isinstance(cell.preprocess_prev_prev, torch.nn.Identity)  # same channels: no 1x1
    assert cell.preprocess_prev.conv.kernel_size == (1, 1)  # prev always projected
    assert _cell(c_pp=6).preprocess_prev_prev.conv.in_channels == 6


def test_skip_connect_is_not_dropped():
    cell = _cell(REVERSED_CELL)
    assert cell.droppable[4] == (False, True)
    assert all(all(flags) for flags in cell.droppable[:4])


def test_double_size_inverts_half_size_on_odd_sizes():
    assert double_size((11, 3)) == (21, 5)
    assert double_size((21, 41)) == (41, 81)


def test_rejects_both_directions():
    with pytest.raises(ValueError, match="not both"):
        _cell(downsample=True, upsample=True)
