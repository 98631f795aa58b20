"""The presets reproduce the parameter counts of the paper's Table 2 (19 classes)."""

from __future__ import annotations

import pytest
import torch

from autodeeplab.genotype import Genotype
from autodeeplab.models import PRESETS, auto_deeplab_l, auto_deeplab_m, auto_deeplab_s

# [P Table 2]: millions of parameters, rounded to 0.01M.
PAPER_PARAMS = {"auto_deeplab_s": 10.15, "auto_deeplab_m": 21.62, "auto_deeplab_l": 44.42}


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(name):
    # Built on the meta device: real shapes, no memory or initialisation cost (L has 44M).
    with torch.device("meta"):
        model = PRESETS[name](num_classes=19)
    count = sum(p.numel() for p in model.parameters())
    assert round(count / 1e6, 2) == PAPER_PARAMS[name], count


def test_presets_use_the_paper_genotype():
    assert PRESETS["s"] is auto_deeplab_s
    assert PRESETS["m"] is auto_deeplab_m
    assert PRESETS["l"] is auto_deeplab_l
    with torch.device("meta"):
        models = {name: PRESETS[name](num_classes=19) for name in PAPER_PARAMS}
    paper = Genotype.named("paper").to_dict()
    for name, filters in zip(sorted(PAPER_PARAMS), (48, 32, 20)):
        assert models[name].model_args["genotype"] == paper
        assert models[name].model_args["filter_multiplier"] == filters
        assert models[name].output_stride == 8


def test_small_preset_runs():
    model = auto_deeplab_s(num_classes=19).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 33, 33))["out"].shape == (1, 19, 33, 33)
