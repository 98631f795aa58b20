import pytest
import torch

from autodeeplab.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    eval_transform,
    search_transform,
)


def _pair(h=20, w=30):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, h, w, generator=g)
    mask = torch.randint(0, 5, (h, w), generator=g)
    return image, mask


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_crop_pads_mask_with_ignore_and_image_with_zero():
    image, mask = _pair(10, 12)
    out_image, out_mask = RandomCrop(16, ignore_index=255)(image, mask, _gen())
    assert out_image.shape == (3, 16, 16) and out_mask.shape == (16, 16)
    # The source is smaller in both dimensions, so the crop window is the padded canvas.
    assert torch.equal(out_mask[:10, :12], mask)
    assert torch.all(out_mask[10:] == 255) and torch.all(out_mask[:, 12:] == 255)
    assert torch.all(out_image[:, 10:] == 0) and torch.all(out_image[:, :, 12:] == 0)
    assert out_mask.dtype == torch.int64


def test_search_crops_pad_with_the_mean_colour_which_normalises_to_zero():
    image, mask = _pair(10, 12)
    filled, _ = RandomCrop(16, fill=(0.1, 0.2, 0.3))(image, mask, _gen())
    assert torch.equal(filled[:, :10, :12], image)
    for channel, value in enumerate((0.1, 0.2, 0.3)):
        assert torch.all(filled[channel, 10:] == value) and torch.all(
            filled[channel, :, 12:] == value
        )
    out_image, out_mask = search_transform(16, flip=False)(image, mask, _gen())
    assert torch.allclose(out_image[:, 10:], torch.zeros(())) and torch.all(out_mask[10:] == 255)
    assert torch.allclose(out_image[:, :, 12:], torch.zeros(()), atol=1e-6)


def test_crop_is_a_window_of_the_input():
    image, mask = _pair(20, 30)
    out_image, out_mask = RandomCrop((8, 11))(image, mask, _gen(5))
    assert out_image.shape == (3, 8, 11)
    windows = [
        (t, left)
        for t in range(20 - 8 + 1)
        for left in range(30 - 11 + 1)
        if torch.equal(image[:, t : t + 8, left : left + 11], out_image)
    ]
    assert len(windows) == 1
    t, left = windows[0]
    assert torch.equal(mask[t : t + 8, left : left + 11], out_mask)


@pytest.mark.parametrize(("h", "w", "ch", "cw"), [(10, 10, 9, 6), (7, 12, 7, 11)])
def test_crop_draws_every_window_position(h, w, ch, cw):
    """Every offset from 0 to size - crop, the right and bottom edges included."""
    mask = torch.arange(h * w).view(h, w)
    image = mask.float().expand(3, h, w)
    crop = RandomCrop((ch, cw))
    corners = set()
    for seed in range(300):
        _, out = crop(image, mask, _gen(seed))
        corners.add(divmod(int(out[0, 0]), w))
    assert corners == {(t, l) for t in range(h - ch + 1) for l in range(w - cw + 1)}


def test_flip_flips_image_and_mask_together():
    image, mask = _pair()
    out_image, out_mask = RandomHorizontalFlip(p=1.0)(image, mask, _gen())
    assert torch.equal(out_image, image.flip(-1)) and torch.equal(out_mask, mask.flip(-1))
    same_image, same_mask = RandomHorizontalFlip(p=0.0)(image, mask, _gen())
    assert torch.equal(same_image, image) and torch.equal(same_mask, mask)


def test_flip_probability_half_gives_both_outcomes():
    image, mask = _pair()
    flip = RandomHorizontalFlip(0.5)
    flipped = [torch.equal(flip(image, mask, _gen(s))[1], mask.flip(-1)) for s in range(40)]
    assert 5 < sum(flipped) < 35


def test_scale_changes_size_and_keeps_labels():
    image, mask = _pair(20, 30)
    out_image, out_mask = RandomScale(2.0, 2.0)(image, mask, _gen())
    assert out_image.shape == (3, 40, 60) and out_mask.shape == (40, 60)
    assert out_mask.dtype == torch.int64
    # Nearest-neighbour at an integer factor replicates each label into a 2x2 block.
    assert torch.equal(out_mask[::2, ::2], mask)
    assert set(out_mask.unique().tolist()) <= set(mask.unique().tolist())
    small_image, small_mask = RandomScale(0.5, 0.5)(image, mask, _gen())
    assert small_image.shape == (3, 10, 15) and small_mask.shape == (10, 15)


@pytest.mark.parametrize("scale", [0.25, 0.75, 1.5])
def test_scaled_masks_take_the_label_under_each_output_pixels_centre(scale):
    # The label of output pixel i is the source pixel under its centre, (i + 0.5) / scale,
    # where the bilinear image samples too; plain "nearest" is up to 1/scale/2 pixels off.
    h, w = 16, 24
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    mask = rows * w + cols  # every pixel its own label
    image = torch.stack([rows, cols, cols]).float()
    out_image, out_mask = RandomScale(scale, scale)(image, mask, _gen())
    oh, ow = out_mask.shape
    src_rows = ((torch.arange(oh) + 0.5) * h / oh).floor().long()
    src_cols = ((torch.arange(ow) + 0.5) * w / ow).floor().long()
    torch.testing.assert_close(out_mask, mask[src_rows][:, src_cols])
    # Away from the borders the bilinear ramp gives the source coordinate of the centre,
    # which lies in the labelled pixel: at most half a pixel from its index.
    inner = (slice(1, -1), slice(1, -1))
    assert ((out_image[0] - out_mask // w)[inner].abs() <= 0.5 + 1e-5).all()
    assert ((out_image[1] - out_mask % w)[inner].abs() <= 0.5 + 1e-5).all()


def test_scale_range_draws_different_sizes():
    image, mask = _pair(20, 20)
    sizes = {RandomScale(0.5, 2.0)(image, mask, _gen(s))[1].shape for s in range(10)}
    assert len(sizes) > 3


def test_generator_reproducibility():
    image, mask = _pair(32, 32)
    t = Compose(
        [
            RandomScale(0.75, 1.5),
            RandomCrop(24),
            RandomHorizontalFlip(),
            ColorJitter(0.3, 0.3, 0.3),
            Normalize(),
        ]
    )
    a = t(image, mask, _gen(7))
    b = t(image, mask, _gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    others = [t(image, mask, _gen(s)) for s in range(8, 12)]
    assert any(not torch.equal(a[0], o[0]) for o in others)


def test_normalize_matches_formula_and_keeps_mask():
    image, mask = _pair()
    out_image, out_mask = Normalize()(image, mask)
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(out_image, (image - mean) / std)
    assert out_mask is mask
    torch.testing.assert_close(eval_transform()(image, mask)[0], out_image)


def test_color_jitter_stays_in_unit_range_and_keeps_mask():
    image, mask = _pair()
    out_image, out_mask = ColorJitter(0.5, 0.5, 0.5)(image, mask, _gen(3))
    assert out_image.min() >= 0 and out_image.max() <= 1
    assert out_mask is mask
    assert not torch.equal(out_image, image)


def test_color_jitter_follows_brightness_contrast_and_saturation_formulas():
    image, mask = _pair()
    jitter = ColorJitter(0.3, 0.4, 0.5)
    out_image, _ = jitter(image, mask, _gen(7))
    # The factors are the generator's first three uniform draws, in that order.
    g = _gen(7)
    u = [float(torch.rand((), generator=g)) for _ in range(3)]
    b, c, s = (1 - x + 2 * x * v for x, v in zip((0.3, 0.4, 0.5), u, strict=True))
    expected = (image * b).clamp(0, 1)
    mean = expected.mean()
    expected = ((expected - mean) * c + mean).clamp(0, 1)
    gray = 0.299 * expected[0] + 0.587 * expected[1] + 0.114 * expected[2]
    expected = ((expected - gray) * s + gray).clamp(0, 1)
    torch.testing.assert_close(out_image, expected)


def test_search_transform_output():
    image, mask = _pair(40, 40)
    out_image, out_mask = search_transform(32, scale=(0.5, 1.5))(image, mask, _gen(1))
    assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
    valid = out_mask != 255
    assert torch.all(out_mask[valid] < 5)


def test_shape_and_argument_errors():
    image, mask = _pair(10, 10)
    with pytest.raises(ValueError, match="mask"):
        RandomHorizontalFlip()(image, mask[:5])
    with pytest.raises(ValueError, match="min_scale"):
        RandomScale(2.0, 1.0)
    with pytest.raises(ValueError, match="crop size"):
        RandomCrop((0, 4))
