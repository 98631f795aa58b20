import math

import numpy as np
import pytest
import torch

from autodeeplab.engine.metrics import ConfusionMatrix


def _brute_force(pred: np.ndarray, target: np.ndarray, c: int, ignore: int) -> dict:
    """Reference scores from explicit per-class pixel counting."""
    keep = target != ignore
    p, t = pred[keep], target[keep]
    matrix = np.zeros((c, c), dtype=np.int64)
    for ti, pi in zip(t.tolist(), p.tolist()):
        matrix[ti, pi] += 1
    iou, acc = [], []
    for k in range(c):
        inter = np.sum((p == k) & (t == k))
        union = np.sum((p == k) | (t == k))
        count = np.sum(t == k)
        iou.append(inter / union if union else math.nan)
        acc.append(inter / count if count else math.nan)
    freq = [np.sum(t == k) / t.size for k in range(c)]
    return {
        "matrix": matrix,
        "pixel_acc": float(np.mean(p == t)),
        "iou": iou,
        "acc": acc,
        "miou": float(np.nanmean(iou)),
        "mean_acc": float(np.nanmean(acc)),
        "fwiou": float(sum(f * i for f, i in zip(freq, iou) if not math.isnan(i))),
    }


def _assert_scores(scores: dict, ref: dict) -> None:
    for key in ("pixel_acc", "miou", "mean_acc", "fwiou"):
        assert isinstance(scores[key], float)
        assert scores[key] == pytest.approx(ref[key], abs=1e-12)
    np.testing.assert_allclose(scores["iou"], ref["iou"], atol=1e-12)
    np.testing.assert_allclose(scores["acc"], ref["acc"], atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_with_ignore(seed):
    rng = np.random.default_rng(seed)
    c = 6
    target = rng.integers(0, c, (3, 17, 13))
    target[rng.random(target.shape) < 0.2] = 255
    pred = np.where(rng.random(target.shape) < 0.6, target % c, rng.integers(0, c, target.shape))
    cm = ConfusionMatrix(c)
    cm.update(torch.from_numpy(pred[:2]), torch.from_numpy(target[:2]))
    cm.update(torch.from_numpy(pred[2:]), torch.from_numpy(target[2:]))
    ref = _brute_force(pred, target, c, 255)
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.matrix.numpy(), ref["matrix"])
    _assert_scores(cm.compute(), ref)


def test_logits_input_equals_argmax_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 9, 9, generator=g)
    target = torch.randint(0, 4, (2, 9, 9), generator=g)
    a, b = ConfusionMatrix(4), ConfusionMatrix(4)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert torch.equal(a.matrix, b.matrix)
    assert int(a.matrix.sum()) == target.numel()


def test_ignored_pixels_are_skipped_even_with_wrong_prediction():
    target = torch.tensor([[[0, 255, 1, 255]]])
    pred = torch.tensor([[[0, 1, 1, 0]]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 0], [0, 1]]
    assert cm.compute()["pixel_acc"] == 1.0


def test_empty_class_is_nan_and_left_out_of_means():
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    cm = ConfusionMatrix(3)
    cm.update(pred, target)
    scores = cm.compute()
    assert math.isnan(scores["iou"][2]) and math.isnan(scores["acc"][2])
    assert scores["iou"][:2] == pytest.approx([1 / 2, 2 / 3])
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)


def test_empty_matrix_scores_are_nan():
    scores = ConfusionMatrix(3).compute()
    assert all(math.isnan(scores[k]) for k in ("pixel_acc", "mean_acc", "miou", "fwiou"))
    assert all(math.isnan(v) for v in scores["iou"] + scores["acc"])


def test_predicted_but_absent_class_counts_as_zero_iou():
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[[2, 0]]]), torch.tensor([[[0, 0]]]))
    scores = cm.compute()
    assert scores["iou"][2] == 0.0 and math.isnan(scores["acc"][2])
    assert scores["miou"] == pytest.approx((1 / 2 + 0.0) / 2)


def test_out_of_range_labels_raise():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="target contains label 7"):
        cm.update(torch.zeros(1, 2, 2, dtype=torch.int64), torch.tensor([[[0, 7], [1, 2]]]))
    with pytest.raises(ValueError, match="pred contains label -1"):
        cm.update(torch.tensor([[[0, -1], [1, 2]]]), torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="255, outside 0..2 .only the target's pixels may carry"):
        cm.update(torch.tensor([[[0, 255], [1, 2]]]), torch.zeros(1, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="does not match"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.int64), torch.zeros(1, 2, 2, dtype=torch.int64))
    assert int(cm.matrix.sum()) == 0


def test_merge_reset_and_mismatch():
    g = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 5, (4, 8, 8), generator=g)
    target = torch.randint(0, 5, (4, 8, 8), generator=g)
    whole, part_a, part_b = ConfusionMatrix(5), ConfusionMatrix(5), ConfusionMatrix(5)
    whole.update(pred, target)
    part_a.update(pred[:1], target[:1])
    part_b.update(pred[1:], target[1:])
    part_a += part_b
    assert torch.equal(part_a.matrix, whole.matrix)
    assert part_a.compute() == whole.compute()
    whole.reset()
    assert int(whole.matrix.sum()) == 0 and whole.matrix.shape == (5, 5)
    with pytest.raises(ValueError, match="num_classes=4"):
        whole.merge(ConfusionMatrix(4))


def test_bad_updates_and_counts_are_refused_naming_them():
    matrix = ConfusionMatrix(3)
    target = torch.zeros(1, 4, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"logits have 4 channels .* expected num_classes=3"):
        matrix.update(torch.randn(1, 4, 4, 4), target)
    with pytest.raises(ValueError, match="expected integer labels, got pred torch.float32"):
        matrix.update(torch.zeros(1, 4, 4), target)
    with pytest.raises(ValueError, match=r"counts of shape \(2, 3\); expected \(C, C\)"):
        ConfusionMatrix.from_counts(torch.zeros(2, 3))


def test_from_counts_scores_what_the_updates_scored():
    pred, target = torch.randint(0, 4, (2, 6, 7)), torch.randint(0, 4, (2, 6, 7))
    target[0, 0] = 255
    direct = ConfusionMatrix(4)
    direct.update(pred, target)
    rebuilt = ConfusionMatrix.from_counts(direct.matrix.clone())
    assert torch.equal(rebuilt.matrix, direct.matrix)
    assert rebuilt.compute() == pytest.approx(direct.compute(), nan_ok=True)
