"""The parity rule: max |exported - eager| <= tolerance * max(1, max |eager|)."""

import numpy as np
import pytest
import torch
from torch import nn

from autodeeplab.export.parity import check_parity


class Scaled(nn.Module):
    """Logits ``scale * image[:, :2]``: a stand-in whose largest logit is set by ``scale``."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return {"out": self.scale * x[:, :2]}


def _runner(scale: float, error: float):
    """An "exported" model off by ``error`` at one pixel."""

    def run(images: np.ndarray) -> np.ndarray:
        out = scale * images[:, :2].astype(np.float32)
        out[0, 0, 0, 0] += error
        return out

    return run


@pytest.mark.parametrize(
    ("scale", "error", "passed"),
    [
        (1e-3, 0.9e-4, True),  # logits far below 1: the tolerance is absolute
        (1e-3, 1.1e-4, False),
        (100.0, 5e-3, True),  # logits of a few hundred: relative to the largest (3e-2 here)
        (100.0, 0.1, False),
    ],
)
def test_tolerance_is_absolute_below_1_and_relative_above(scale, error, passed):
    cases = [(1, (9, 9))]
    report = check_parity(Scaled(scale), _runner(scale, error), cases, tolerance=1e-4)
    (entry,) = report["sizes"]
    with torch.inference_mode():
        largest = float(
            Scaled(scale)(torch.randn(1, 3, 9, 9, generator=torch.Generator().manual_seed(0)))[
                "out"
            ]
            .abs()
            .max()
        )
    assert entry["reference_max_abs"] == pytest.approx(largest)
    assert entry["allowed"] == pytest.approx(1e-4 * max(1.0, largest))
    assert entry["max_abs_diff"] == pytest.approx(error, rel=1e-3, abs=1e-7)
    assert entry["passed"] is passed and report["passed"] is passed


def test_a_runner_error_or_wrong_shape_fails_the_size_with_its_reason():
    def broken(images):
        raise RuntimeError("shape (1, 3, 9, 9) not supported")

    report = check_parity(Scaled(1.0), broken, [(1, (9, 9))], tolerance=1e-4)
    assert report["sizes"][0]["error"].startswith("RuntimeError: shape")
    report = check_parity(Scaled(1.0), lambda x: x, [(1, (9, 9))], tolerance=1e-4)
    assert report["sizes"][0]["error"] == "output shape [1, 3, 9, 9], eager [1, 2, 9, 9]"
    assert report["passed"] is False
