import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from autodeeplab.engine.losses import (
    LOSSES,
    build_loss,
    cross_entropy,
    dice,
    focal,
    ohem_cross_entropy,
)

IGNORE = 255


def _batch(n=2, k=4, h=5, w=6, ignore_frac=0.3):
    logits = torch.randn(n, k, h, w, requires_grad=True)
    target = torch.randint(0, k, (n, h, w))
    target[torch.rand(n, h, w) < ignore_frac] = IGNORE
    return logits, target


def test_cross_entropy_matches_torch():
    logits, target = _batch()
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    torch.testing.assert_close(cross_entropy(logits, target), expected)


def test_ohem_keeps_pixels_above_threshold():
    # Four pixels, two classes; target probabilities 0.9, 0.6, 0.3, 0.8 and one ignored pixel.
    probs = torch.tensor([0.9, 0.6, 0.3, 0.8, 0.5])
    logits = torch.stack([probs.log(), (1 - probs).log()]).view(1, 2, 1, 5)
    target = torch.tensor([[[0, 0, 0, 0, IGNORE]]])
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=1)
    torch.testing.assert_close(got, -(math.log(0.6) + math.log(0.3)) / 2 * torch.ones(()))
    # min_kept above the count over the threshold: the three hardest pixels.
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=3)
    expected = -(math.log(0.6) + math.log(0.3) + math.log(0.8)) / 3
    torch.testing.assert_close(got, torch.tensor(expected))
    # min_kept is clipped to the four valid pixels: plain cross-entropy.
    got = ohem_cross_entropy(logits, target, thresh=0.7, min_kept=100_000)
    torch.testing.assert_close(got, cross_entropy(logits, target))


def test_ohem_gradient_only_on_kept_pixels():
    probs = torch.tensor([0.9, 0.6, 0.3, 0.8])
    logits = torch.stack([probs.log(), (1 - probs).log()]).view(1, 2, 1, 4).requires_grad_()
    ohem_cross_entropy(logits, torch.zeros(1, 1, 4, dtype=torch.int64), min_kept=0).backward()
    touched = logits.grad.abs().sum(dim=1).flatten() > 0
    assert touched.tolist() == [False, True, True, False]


def _dice_numpy(logits, target, smooth=1.0):
    x = logits.detach().numpy().astype(np.float64)
    t = target.numpy()
    p = np.exp(x - x.max(1, keepdims=True))
    p = p / p.sum(1, keepdims=True)
    valid = t != IGNORE
    pred = x.argmax(1)
    scores = []
    for c in range(x.shape[1]):
        pc = p[:, c][valid]
        tc = (t[valid] == c).astype(np.float64)
        if tc.sum() == 0 and not np.any(pred[valid] == c):
            continue
        scores.append((2 * (pc * tc).sum() + smooth) / (pc.sum() + tc.sum() + smooth))
    return 1 - np.mean(scores)


@pytest.mark.parametrize("k", [2, 5])
def test_dice_matches_numpy(k):
    logits, target = _batch(k=k)
    got = dice(logits, target)
    assert got.item() == pytest.approx(_dice_numpy(logits, target), abs=1e-6)


def test_dice_skips_classes_absent_from_target_and_prediction():
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 5.0  # every pixel predicts class 0; class 2 appears nowhere
    target = torch.tensor([[[0, 1], [0, IGNORE]]])
    assert dice(logits, target).item() == pytest.approx(_dice_numpy(logits, target), abs=1e-6)


def test_dice_penalises_a_class_predicted_but_absent_from_the_target():
    logits = torch.zeros(1, 2, 2, 4)
    logits[0, 0] = 2.0
    logits[0, 1, :, :2] = 4.0  # half the pixels predict class 1, which the target never has
    target = torch.zeros(1, 2, 4, dtype=torch.long)
    p1 = torch.softmax(logits, 1)[0, 1].double()
    p0 = 1 - p1
    present = 1 - (2 * p0.sum() + 1) / (p0.sum() + 8 + 1)  # class 0 alone
    with_false_positive = 1 - ((2 * p0.sum() + 1) / (p0.sum() + 8 + 1) + 1 / (p1.sum() + 1)) / 2
    got = dice(logits, target).item()
    assert got == pytest.approx(with_false_positive.item(), abs=1e-6)
    assert got == pytest.approx(_dice_numpy(logits, target), abs=1e-6)
    assert abs(got - present.item()) > 0.05


def test_focal_gamma_zero_is_cross_entropy():
    logits, target = _batch()
    torch.testing.assert_close(focal(logits, target, gamma=0.0), cross_entropy(logits, target))


def test_focal_against_formula_with_alpha():
    logits, target = _batch(k=3)
    alpha = [0.2, 0.5, 0.3]
    valid = target != IGNORE
    logp = logits.log_softmax(1).permute(0, 2, 3, 1)[valid]
    t = target[valid]
    logpt = logp[torch.arange(len(t)), t]
    expected = (-torch.tensor(alpha)[t] * (1 - logpt.exp()) ** 2 * logpt).mean()
    torch.testing.assert_close(focal(logits, target, alpha=alpha), expected)
    torch.testing.assert_close(focal(logits, target, alpha=0.25), 0.25 * focal(logits, target))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_is_finite_on_certain_pixels(gamma):
    # Pixel (0, 0, 0) is certain (p_t rounds to 1 in float32): its gradient must be 0, not NaN.
    logits, target = _batch(k=3)
    logits = logits.detach().clone()
    logits[0, :, 0, 0] = torch.tensor([60.0, 0.0, 0.0])
    target[0, 0, 0] = 0
    logits.requires_grad_(True)
    focal(logits, target, gamma=gamma).backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad[0, :, 0, 0].abs().max() < 1e-12
    assert logits.grad.abs().sum() > 0


def test_focal_refuses_a_negative_gamma():
    logits, target = _batch()
    with pytest.raises(ValueError, match="gamma=-1"):
        focal(logits, target, gamma=-1.0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_ignored_gives_zero_with_grad(name):
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    loss = LOSSES[name](logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_losses_are_finite_and_reach_logits(name):
    logits, target = _batch()
    loss = LOSSES[name](logits, target)
    loss.backward()
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert logits.grad.abs().sum() > 0


def test_build_loss_weighted_sum():
    logits, target = _batch()
    loss = build_loss({"ce": 1.0, "dice": 0.5, "ohem": 2.0}, thresh=0.5, min_kept=10, smooth=2.0)
    expected = (
        cross_entropy(logits, target)
        + 0.5 * dice(logits, target, smooth=2.0)
        + 2.0 * ohem_cross_entropy(logits, target, thresh=0.5, min_kept=10)
    )
    torch.testing.assert_close(loss(logits, target), expected)
    assert "dice=0.5" in repr(loss)


def test_build_loss_string_and_ignore_index():
    logits, target = _batch()
    target[target == IGNORE] = 7
    loss = build_loss("focal", ignore_index=7, gamma=1.0, alpha=None)
    torch.testing.assert_close(
        loss(logits, target), focal(logits, target, ignore_index=7, gamma=1.0)
    )


@pytest.mark.parametrize(
    ("terms", "options", "match"),
    [
        ({"bce": 1.0}, {}, "known: \\['ce', 'dice', 'focal', 'ohem'\\]"),
        ({"ce": 0.0}, {}, "positive"),
        ({"ce": -1.0}, {}, "positive"),
        ({}, {}, "no loss terms"),
        ({"ce": 1.0}, {"gama": 2.0}, "unknown loss options"),
    ],
)
def test_build_loss_errors(terms, options, match):
    with pytest.raises(ValueError, match=match):
        build_loss(terms, **options)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="expected logits"):
        cross_entropy(torch.randn(1, 3, 4, 4), torch.zeros(1, 4, 5, dtype=torch.int64))


def test_bad_loss_options_are_refused_naming_them():
    logits, target = _batch()
    with pytest.raises(ValueError, match="alpha has 3 entries for 4 classes"):
        focal(logits, target, alpha=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="ohem needs 0 < thresh <= 1 and min_kept >= 0; got 1.5"):
        ohem_cross_entropy(logits, target, thresh=1.5)
    with pytest.raises(ValueError, match="min_kept >= 0; got 0.7, -1"):
        ohem_cross_entropy(logits, target, min_kept=-1)
