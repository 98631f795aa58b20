import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.engine.inference import predict, sliding_window

K = 3


class DictModel(nn.Module):
    """Wraps a module to return ``{"out": logits}`` like the library's models."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.seen: list[tuple[int, int]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return {"out": self.body(x)}


def _pointwise():
    return DictModel(nn.Conv2d(2, K, 1)).eval()


def _conv3():
    return DictModel(nn.Conv2d(2, K, 3, padding=1)).eval()


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("size", [(8, 8), (7, 11), (1, 5)])
def test_single_scale_is_a_plain_forward(size):
    model = _conv3()
    image = torch.randn(2, 2, *size)
    got = predict(model, image, num_classes=K)
    torch.testing.assert_close(got, model(image)["out"])


def test_accepts_a_model_returning_a_tensor():
    body = nn.Conv2d(2, K, 3, padding=1)
    image = torch.randn(1, 2, 9, 9)
    torch.testing.assert_close(predict(body, image, num_classes=K), body(image).detach())


def test_no_grad_inside():
    out = predict(_pointwise(), torch.randn(1, 2, 4, 4), num_classes=K)
    assert not out.requires_grad


@pytest.mark.parametrize(("size", "crop"), [((17, 23), 8), ((16, 16), (5, 7)), ((9, 30), 10)])
def test_sliding_window_is_exact_for_a_pointwise_model(size, crop):
    model = _pointwise()
    image = torch.randn(2, 2, *size)
    got = predict(model, image, crop_size=crop, num_classes=K)
    torch.testing.assert_close(got, model.body(image).detach())
    ch, cw = (crop, crop) if isinstance(crop, int) else crop
    assert len(model.seen) > 1 and set(model.seen) == {(ch, cw)}


def test_sliding_window_strides_each_side_by_its_own_crop_length():
    """A 8x16 window over 20x40 at stride rate 1/2: rows every 4 pixels, columns every 8."""
    corners = []

    def locate(crop):  # channel 0 holds each pixel's row, channel 1 its column
        corners.append((int(crop[0, 0, 0, 0]), int(crop[0, 1, 0, 0])))
        return torch.zeros(crop.shape[0], 2, *crop.shape[-2:])

    rows = torch.arange(20.0).view(20, 1).expand(20, 40)
    columns = torch.arange(40.0).view(1, 40).expand(20, 40)
    sliding_window(locate, torch.stack([rows, columns])[None], (8, 16), 0.5, 2)
    assert sorted(corners) == [(y, x) for y in (0, 4, 8, 12) for x in (0, 8, 16, 24)]


def test_sliding_window_positions_and_count_map():
    """Stride ceil(8 * 2/3) = 6 over 17 rows: windows at 0, 6 and 9 (aligned to the border)."""
    rows = torch.arange(17.0).view(1, 1, 17, 1).expand(1, K, 17, 8)
    starts = []

    def identity(x):
        starts.append(int(x[0, 0, 0, 0]))
        return x

    out = sliding_window(identity, rows, 8, 2 / 3, K)
    assert starts == [0, 6, 9]
    torch.testing.assert_close(out, rows)  # averaging by the count map undoes the overlaps


def test_smaller_image_is_padded_and_cropped():
    # With zero padding at the bottom/right, a single 3x3 conv sees the same zeros past the border
    # as its own padding, so padded inference is exact.
    model = _conv3()
    image = torch.randn(1, 2, 5, 7)
    got = predict(model, image, crop_size=(8, 10), num_classes=K)
    assert model.seen[-1] == (8, 10)
    torch.testing.assert_close(got, model.body(image).detach())


def test_one_side_larger_than_the_crop():
    model = _pointwise()
    image = torch.randn(1, 2, 5, 20)
    got = predict(model, image, crop_size=8, num_classes=K)
    assert set(model.seen) == {(8, 8)}
    torch.testing.assert_close(got, model.body(image).detach())


def _combined(passes, average):
    """The reference combination: DeepLab's mean of probabilities, or the mean of logits."""
    stacked = torch.stack(passes).detach()
    if average == "logits":
        return stacked.mean(0)
    return stacked.softmax(dim=2).mean(0)  # compared as probabilities


@pytest.mark.parametrize("average", ["probabilities", "logits"])
def test_multi_scale_is_the_average_of_resized_passes(average):
    model = _conv3()
    image = torch.randn(1, 2, 13, 10)
    scales = (0.5, 1.0, 1.75)
    got = predict(model, image, scales=scales, num_classes=K, average=average)
    passes = []
    for s in scales:
        scaled = _resize(image, (round(13 * s), round(10 * s)))
        passes.append(_resize(model.body(scaled), (13, 10)))
    expected = _combined(passes, average)
    torch.testing.assert_close(got.softmax(1) if average == "probabilities" else got, expected)
    assert model.seen == [(6, 5), (13, 10), (23, 18)]  # Python's round: 6.5 -> 6


@pytest.mark.parametrize("average", ["probabilities", "logits"])
def test_flip_averages_the_mirrored_pass(average):
    model = _conv3()
    image = torch.randn(1, 2, 6, 9)
    got = predict(model, image, flip=True, num_classes=K, average=average)
    passes = [model.body(image), model.body(image.flip(-1)).flip(-1)]
    expected = _combined(passes, average)
    torch.testing.assert_close(got.softmax(1) if average == "probabilities" else got, expected)


def test_averaged_probabilities_of_bfloat16_logits_are_summed_in_float32():
    model = _conv3()
    image = torch.randn(1, 2, 6, 9)
    logits = [model.body(image), model.body(image.flip(-1)).flip(-1)]

    def bf16(x):
        return model.body(x).to(torch.bfloat16)

    got = predict(bf16, image, flip=True, num_classes=K)
    assert got.dtype == torch.float32
    expected = torch.stack([x.to(torch.bfloat16).double() for x in logits]).softmax(2).mean(0)
    torch.testing.assert_close(got.double().exp(), expected.detach(), atol=1e-6, rtol=1e-6)


def test_averaged_probabilities_are_a_log_probability_that_stays_finite():
    # Logits far apart: one pass's softmax underflows to exactly 0 for most classes.
    passes = iter([torch.tensor([0.0, -200.0, 300.0]), torch.tensor([-500.0, 0.0, 100.0])])

    def model(x):
        return next(passes).view(1, K, 1, 1).expand(1, K, *x.shape[-2:])

    got = predict(model, torch.randn(1, 2, 1, 1), flip=True, num_classes=K)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.logsumexp(1), torch.zeros(1, 1, 1))  # log of probabilities
    # In float64 the probabilities do not underflow, so the mean can be taken directly.
    both = torch.tensor([[0.0, -200.0, 300.0], [-500.0, 0.0, 100.0]], dtype=torch.float64)
    expected = both.softmax(1).mean(0).log()
    torch.testing.assert_close(got.view(K).double(), expected)


def test_flip_is_a_no_op_for_a_flip_equivariant_model():
    conv = nn.Conv2d(2, K, 3, padding=1)
    with torch.no_grad():
        conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)  # mirror-symmetric kernels
    image = torch.randn(1, 2, 7, 9)
    plain = predict(conv, image, num_classes=K)
    flipped = predict(conv, image, flip=True, num_classes=K)
    torch.testing.assert_close(flipped.softmax(1), plain.softmax(1))
    logits = predict(conv, image, flip=True, num_classes=K, average="logits")
    torch.testing.assert_close(logits, plain)


@pytest.mark.parametrize("size", [(7, 9), (15, 4), (1, 1)])
def test_output_size_equals_input_size(size):
    model = _conv3()
    image = torch.randn(2, 2, *size)
    out = predict(model, image, scales=(0.5, 0.75, 1.25), flip=True, crop_size=5, num_classes=K)
    assert out.shape == (2, K, *size)


def test_model_output_at_another_size_is_resized():
    def half(x):
        return torch.randn(x.shape[0], K, x.shape[2] // 2 + 1, x.shape[3] // 2 + 1)

    assert predict(half, torch.randn(1, 2, 9, 7), num_classes=K).shape == (1, K, 9, 7)


def test_errors():
    image = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="num_classes=5"):
        predict(_pointwise(), image, num_classes=5)
    with pytest.raises(ValueError, match="scales"):
        predict(_pointwise(), image, scales=(), num_classes=K)
    with pytest.raises(ValueError, match="stride_rate"):
        predict(_pointwise(), image, crop_size=2, stride_rate=0.0, num_classes=K)
    with pytest.raises(ValueError, match="average='mean'; expected one of probabilities, logits"):
        predict(_pointwise(), image, flip=True, num_classes=K, average="mean")


@pytest.mark.parametrize(
    "scales, flip, crop_size, average",
    [
        ((1.0,), False, None, "probabilities"),
        ((0.5, 1.0), True, 12, "probabilities"),
        ((0.5, 1.0), True, 12, "logits"),
    ],
)
def test_evaluate_model_scores_every_image_in_eval_mode_with_its_inference_settings(
    scales, flip, crop_size, average
):
    from torch.utils.data import TensorDataset

    from autodeeplab.engine.evaluation import evaluate_model
    from autodeeplab.engine.metrics import ConfusionMatrix

    torch.manual_seed(0)
    # BatchNorm makes train and eval mode differ; the asymmetric kernel makes flips matter.
    model = nn.Sequential(nn.Conv2d(3, 4, (1, 3), padding=(0, 1)), nn.BatchNorm2d(4))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()
    images, masks = torch.randn(3, 3, 17, 21), torch.randint(0, 4, (3, 17, 21))
    masks[0, :3] = 255
    expected, other = ConfusionMatrix(4, 255), ConfusionMatrix(4, 255)
    model.eval()
    for image, mask in zip(images, masks, strict=True):
        settings = dict(scales=scales, flip=flip, crop_size=crop_size, num_classes=4)
        expected.update(predict(model, image[None], **settings, average=average), mask[None])
        another = "logits" if average == "probabilities" else "probabilities"
        other.update(predict(model, image[None], **settings, average=another), mask[None])
    model.train()
    if len(scales) > 1 or flip:  # the averages differ here, so passing ``average`` on matters
        assert other.compute() != expected.compute()

    rng = torch.get_rng_state()
    scores = evaluate_model(
        model,
        TensorDataset(images, masks),
        num_classes=4,
        scales=scales,
        flip=flip,
        crop_size=crop_size,
        average=average,
    )
    # A validation draws nothing from the global generator: the training after it (its
    # augmentation and drop path) goes on as it would have without it, as a resumed run does.
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training  # left as it was
    assert scores == pytest.approx(expected.compute())
    # Train-mode BatchNorm (the batch's statistics) would have scored otherwise.
    with torch.no_grad():
        train_mode = ConfusionMatrix(4, 255)
        train_mode.update(model(images), masks)
    assert train_mode.compute()["miou"] != scores["miou"]
