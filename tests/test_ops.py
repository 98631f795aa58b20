import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab import OPS, PRIMITIVES
from autodeeplab.ops import AtrousConv, FactorizedReduce, SepConv, Stem, half_size, resize


def test_resize_aligns_corners_as_tf():
    ramp = torch.arange(5.0).view(1, 1, 1, 5)
    torch.testing.assert_close(resize(ramp, (1, 13)), torch.linspace(0, 4, 13).view(1, 1, 1, 13))
    column = torch.arange(3.0).view(1, 1, 3, 1)
    torch.testing.assert_close(resize(column, (5, 1)), torch.linspace(0, 2, 5).view(1, 1, 5, 1))


def test_stem_is_conv_bn_relu_conv_bn_then_relu_conv_bn():
    """DESIGN §6: the stride-2 half feature is taken before the ReLU the last conv reads."""
    torch.manual_seed(0)
    stem = Stem((8, 8, 16)).eval()
    x = torch.randn(2, 3, 33, 33)
    with torch.no_grad():
        half, quarter = stem(x)
        first = F.relu(stem.conv0[1](stem.conv0[0](x)))
        expected_half = stem.conv1[1](stem.conv1[0](first))
        expected_quarter = stem.conv2[1](stem.conv2[0](F.relu(expected_half)))
    torch.testing.assert_close(half, expected_half)
    torch.testing.assert_close(quarter, expected_quarter)
    assert (half < 0).any()  # no ReLU on the half feature itself


def test_primitives_order_and_table():
    assert PRIMITIVES == (
        "none",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "atrous_conv_3x3",
        "atrous_conv_5x5",
    )
    assert tuple(OPS) == PRIMITIVES
    with pytest.raises(TypeError):
        OPS["new"] = None  # the table is read-only


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [8, 9])
def test_every_op_keeps_channels_and_halves_at_stride_2(name, stride, size):
    op = OPS[name](8, stride, True)
    y = op(torch.randn(2, 8, size, size))
    expected = size if stride == 1 else half_size((size, size))[0]
    assert y.shape == (2, 8, expected, expected)


def test_separable_conv_is_two_units_with_stride_in_the_first():
    op = SepConv(4, 5, stride=2)
    assert len(op) == 2
    assert op[0].depthwise.stride == (2, 2) and op[1].depthwise.stride == (1, 1)
    assert op[0].depthwise.groups == 4 and op[0].depthwise.kernel_size == (5, 5)


def test_atrous_conv_is_dense_and_dilated():
    op = AtrousConv(6, 3)
    assert op.conv.groups == 1 and op.conv.dilation == (2, 2)
    assert op.conv.weight.shape == (6, 6, 3, 3)


@pytest.mark.parametrize("size", [6, 7])
def test_factorized_reduce_reads_even_and_odd_pixels(size):
    # Two 1x1 stride-2 convs: one on the even pixels, one on the odd ones (shifted by one
    # pixel, zero past the border at odd sizes), concatenated on channels.
    op = FactorizedReduce(3, 4)
    op.bn = nn.Identity()
    x = torch.randn(2, 3, size, size)
    r = F.relu(x)
    half = (size + 1) // 2
    even = torch.einsum("oc,nchw->nohw", op.conv_a.weight[:, :, 0, 0], r[:, :, ::2, ::2])
    odd = torch.zeros(2, 2, half, half)
    odd_pixels = r[:, :, 1::2, 1::2]
    odd[:, :, : odd_pixels.shape[2], : odd_pixels.shape[3]] = torch.einsum(
        "oc,nchw->nohw", op.conv_b.weight[:, :, 0, 0], odd_pixels
    )
    torch.testing.assert_close(op(x), torch.cat([even, odd], 1))


@pytest.mark.parametrize("kernel", [3, 5])
def test_atrous_conv_is_rate_2_and_rate_1_after_halving_at_stride_2(kernel):
    x = torch.randn(2, 3, 9, 9)
    for stride, source, dilation in ((1, F.relu(x), 2), (2, resize(F.relu(x), (5, 5)), 1)):
        op = AtrousConv(3, kernel, stride)
        op.bn = nn.Identity()
        expected = F.conv2d(
            source, op.conv.weight, padding=dilation * (kernel // 2), dilation=dilation
        )
        torch.testing.assert_close(op(x), expected)


def test_none_is_zero_and_pools_do_not_count_padding():
    x = torch.rand(1, 2, 5, 5) + 1.0
    assert OPS["none"](2, 1, False)(x).abs().sum() == 0
    # count_include_pad=False: the mean of a constant image is the constant, also at borders.
    avg = OPS["avg_pool_3x3"](2, 1, False)(torch.full((1, 2, 5, 5), 3.0))
    assert torch.allclose(avg, torch.full_like(avg, 3.0))


def test_stem_reaches_stride_4_with_tf_sizes():
    half, quarter = Stem()(torch.randn(1, 3, 321, 321))
    assert half.shape == (1, 64, 161, 161)
    assert quarter.shape == (1, 128, 81, 81)
