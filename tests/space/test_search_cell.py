import pytest
import torch

from autodeeplab.space.cell import SearchCell, channel_shuffle
from autodeeplab.space.edges import num_edges


def test_channel_shuffle_interleaves_the_groups():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    assert channel_shuffle(x, 4).flatten().tolist() == [0, 2, 4, 6, 1, 3, 5, 7]
    # Along another axis, and its inverse is the shuffle with C / groups groups.
    y = torch.randn(2, 3, 12, 5)
    shuffled = channel_shuffle(y, 3, dim=2)
    for g in range(3):
        for j in range(4):  # channel g * (C / groups) + j moves to j * groups + g
            assert torch.equal(shuffled[:, :, j * 3 + g], y[:, :, g * 4 + j])
    assert torch.equal(channel_shuffle(shuffled, 4, dim=2), y)


def test_partial_channel_cell_passes_the_other_channels_through_unweighted():
    # With every op weight on `none`, each mixed op outputs zero, so a block is the shuffled
    # sum of its inputs' passed-through channels, and the mixed-op channels are zero.
    torch.manual_seed(0)
    c, k, blocks = 8, 4, 3
    cell = SearchCell(c, blocks, paths=2, has_prev_prev=True, partial_channels=k)
    weights = torch.zeros(9, 8)
    weights[:, 0] = 1.0  # `none`
    prev, prev_prev = torch.randn(2, 2 * c, 5, 5), torch.randn(2, c, 5, 5)
    out = cell(prev, prev_prev, weights)  # (N, P, B, C, H, W)
    expected_rest = prev.view(2, 2, c, 5, 5)[:, :, 2:] + prev_prev.view(2, 1, c, 5, 5)[:, :, 2:]
    block1 = out[:, :, 0]
    mixed_slots = [g * k for g in range(c // k)]  # channels 0, 4: the mixed ops' outputs
    assert torch.equal(block1[:, :, mixed_slots], torch.zeros_like(block1[:, :, mixed_slots]))
    unshuffled = channel_shuffle(block1, c // k, dim=2)  # back to [mixed, rest]
    torch.testing.assert_close(unshuffled[:, :, 2:], expected_rest)


@pytest.mark.parametrize("partial_channels", [1, 2])
def test_joined_prev_prev_call_equals_separate_calls(partial_channels):
    # One mixed-op call for prev and prev_prev (five per cell, not six) computes the same
    # blocks, gradients and BatchNorm statistics as a call per input.
    torch.manual_seed(0)
    c, blocks, paths = 8, 4, 2
    cells = [
        SearchCell(c, blocks, paths, True, partial_channels, join_prev_prev=join)
        for join in (True, False)
    ]
    cells[1].load_state_dict(cells[0].state_dict())
    assert [len(cell.calls) for cell in cells] == [blocks, blocks + 1]
    prev = torch.randn(2, paths * c, 5, 5, requires_grad=True)
    prev_prev = torch.randn(2, c, 5, 5, requires_grad=True)
    alpha = torch.softmax(torch.randn(num_edges(blocks), 8), -1).requires_grad_()
    grad_out = torch.randn(2, paths, blocks, c, 5, 5)
    results = []
    for cell in cells:
        out = cell(prev, prev_prev, alpha)
        grads = torch.autograd.grad(out, [prev, prev_prev, alpha, *cell.parameters()], grad_out)
        results.append((out, grads, [t for name, t in cell.named_buffers() if "_bn" in name]))
    (out, grads, buffers), (out_s, grads_s, buffers_s) = results
    torch.testing.assert_close(out, out_s, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads, grads_s, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for a, b in zip(buffers, buffers_s, strict=True):
        torch.testing.assert_close(a, b)
