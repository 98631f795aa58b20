import json
import math

import pytest
import torch

from autodeeplab.engine.metrics import ConfusionMatrix
from autodeeplab.engine.report import format_table, scores_to_json

NAMES = ["road", "car", "sky"]


def _scores():
    """Class 2 (sky) never appears in target or prediction, so its scores are NaN."""
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 0, 1, 1]]), torch.tensor([[0, 1, 1, 1]]))
    return cm.compute()


def test_format_table_rows_and_summary():
    text = format_table(_scores(), NAMES)
    lines = text.splitlines()
    rows = {line.split()[0]: line.split()[1:] for line in lines if not line.startswith("-")}
    assert rows["road"] == ["50.00", "100.00"]  # IoU 1/2, acc 1/1
    assert rows["car"] == ["66.67", "66.67"]  # IoU 2/3, acc 2/3
    assert rows["sky"] == ["-", "-"]
    assert rows["pixel_acc"] == ["75.00"]
    assert rows["miou"] == ["58.33"]
    assert [line.split()[0] for line in lines[-4:]] == ["pixel_acc", "mean_acc", "miou", "fwiou"]
    assert len({len(line) for line in lines if line.split()[0] in NAMES}) == 1  # aligned


def test_scores_to_json():
    scores = _scores()
    out = scores_to_json(scores, NAMES)
    assert out["per_class"]["sky"] == {"iou": None, "acc": None}
    assert out["per_class"]["car"]["iou"] == pytest.approx(2 / 3)
    assert out["miou"] == pytest.approx(scores["miou"])
    assert set(out) == {"pixel_acc", "mean_acc", "miou", "fwiou", "per_class"}
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_empty_matrix_has_no_nan_in_json():
    out = scores_to_json(ConfusionMatrix(2).compute(), ["a", "b"])
    assert out["miou"] is None and out["per_class"]["a"]["iou"] is None
    assert "-" in format_table(ConfusionMatrix(2).compute(), ["a", "b"])


def test_name_count_and_duplicates_are_errors():
    with pytest.raises(ValueError, match="2 class names for 3"):
        format_table(_scores(), NAMES[:2])
    with pytest.raises(ValueError, match="not unique"):
        scores_to_json(_scores(), ["a", "a", "b"])
    with pytest.raises(ValueError, match="lack"):
        format_table({"iou": [math.nan]}, ["a"])
