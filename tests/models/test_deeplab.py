"""The decoded model: any valid path, TF shapes on odd sizes, training at batch size 1, gradients,
self-describing ``model_args`` and Scheduled Drop Path."""

from __future__ import annotations

import json
import random

import pytest
import torch

import autodeeplab
from autodeeplab.engine.checkpoint import save_checkpoint
from autodeeplab.genotype import Genotype, GenotypeError
from autodeeplab.models import AutoDeepLab, DropPath, aspp_rates, build_model, load_model

PAPER = Genotype.named("paper")
F = 4  # tiny filter multiplier keeps the tests fast


def _random_path(rng: random.Random, layers: int) -> tuple[int, ...]:
    path, level = [], 0
    for _ in range(layers):
        level = rng.choice([s for s in (level - 1, level, level + 1) if 0 <= s <= 3])
        path.append(level)
    return tuple(path)


_rng = random.Random(0)
PATHS = [
    PAPER.path,  # ends at level 1
    (1, 2, 3, 3, 2, 1),  # never stays at level 0: low-level feature from the stem
    (0, 1, 2, 3),  # ends at level 3
    (1, 0, 1, 0),  # ends at level 0
    (0,),
    *(_random_path(_rng, _rng.randint(2, 8)) for _ in range(3)),
]


def _model(path=PAPER.path, **kwargs) -> AutoDeepLab:
    return build_model(Genotype(PAPER.cell, path), num_classes=3, filter_multiplier=F, **kwargs)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: "".join(map(str, p)))
def test_paths_at_321(path):
    model = _model(path).eval()
    x = torch.randn(1, 3, 321, 321)
    with torch.no_grad():
        features, low_level = model.backbone(x)
        out = model(x)["out"]
    sizes = {0: 81, 1: 41, 2: 21, 3: 11}  # TF: 321 -> 161 -> 81 -> 41 -> 21 -> 11
    assert features.shape == (1, 5 * F * 2 ** path[-1], sizes[path[-1]], sizes[path[-1]])
    assert model.output_stride == 4 * 2 ** path[-1]
    assert low_level.shape[-2:] == (81, 81)
    assert out.shape == (1, 3, 321, 321)


def test_low_level_feature_is_the_last_cell_at_level_0():
    assert _model(PAPER.path).backbone.low_level_cell == 2  # TF end point Cell_2
    assert _model((1, 0, 1, 0, 1)).backbone.low_level_cell == 3
    backbone = _model((1, 2, 1)).backbone
    assert backbone.low_level_cell == -1
    assert backbone.low_level_channels == 128  # the stem output
    x = torch.randn(1, 3, 33, 33)
    backbone.eval()
    with torch.no_grad():
        torch.testing.assert_close(backbone(x)[1], backbone.stem(x)[1])


def test_cells_follow_the_path():
    model = _model()
    cells = model.backbone.cells
    assert len(cells) == len(PAPER.path)
    previous = 0
    for cell, level in zip(cells, PAPER.path):
        assert cell.channels == F * 2**level
        assert (cell.downsample, cell.upsample) == (level > previous, level < previous)
        previous = level


@pytest.mark.parametrize("path", [PAPER.path, (0, 1, 2, 3, 3)], ids=["paper", "to3"])
def test_odd_rectangular_input(path):
    model = _model(path).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 65, 97))["out"].shape == (2, 3, 65, 97)


def test_batch_size_one_training_reaches_every_parameter():
    model = _model((0, 1, 2, 3, 2)).train()
    out = model(torch.randn(1, 3, 65, 65))["out"]
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing


def test_a_training_input_that_shrinks_to_one_value_per_channel_is_refused_naming_it():
    model = _model((0, 1, 2, 2, 1)).train()  # coarsest level 2: stride 16
    with pytest.raises(
        ValueError,
        match=r"AutoDeepLab in training mode: an input of shape "
        r"\(1, 3, 16, 16\) leaves a 1x1 map at level 2.* at least 17 pixels",
    ):
        model(torch.randn(1, 3, 16, 16))
    assert model(torch.randn(1, 3, 17, 17))["out"].shape == (1, 3, 17, 17)
    assert model(torch.randn(2, 3, 16, 16))["out"].shape == (2, 3, 16, 16)
    assert model.eval()(torch.randn(1, 3, 16, 16))["out"].shape == (1, 3, 16, 16)


def test_aspp_rates_follow_the_output_stride():
    assert aspp_rates(4) == (24, 48, 72)
    assert aspp_rates(8) == (12, 24, 36)
    assert aspp_rates(16) == (6, 12, 18)
    assert aspp_rates(32) == (3, 6, 9)
    assert _model().head.aspp.rates == (12, 24, 36)  # the paper's path ends at OS 8
    with pytest.raises(ValueError):
        aspp_rates(64)


def test_aspp_branches_are_dilated_at_their_rates_and_pool_the_mean():
    from torch.nn import functional as tf

    from autodeeplab.models.heads import ASPP

    aspp = ASPP(6, rates=(2, 3, 4), channels=5).eval()
    convs = [branch.conv for branch in aspp.branches]
    assert [(c.kernel_size, c.dilation, c.padding) for c in convs] == [
        ((1, 1), (1, 1), (0, 0)),
        *(((3, 3), (r, r), (r, r)) for r in (2, 3, 4)),
    ]
    # Image pooling: the 1x1 conv of the image's mean feature, broadcast over the map.
    x = torch.randn(2, 6, 9, 11)
    pooled = tf.relu(
        tf.conv2d(x.mean((2, 3), keepdim=True), aspp.pool_conv.weight, aspp.pool_conv.bias)
    )
    features = [branch(x) for branch in aspp.branches] + [pooled.expand(-1, -1, 9, 11)]
    with torch.no_grad():
        torch.testing.assert_close(aspp(x), aspp.project(torch.cat(features, 1)))


def test_model_args_rebuild_the_same_model():
    model = _model((0, 1, 1, 0), drop_path_keep_prob=0.8, decoder_channels=32).eval()
    args = json.loads(json.dumps(model.model_args))  # plain JSON values
    rebuilt = build_model(**args).eval()
    assert rebuilt.model_args == model.model_args
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == shapes
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x)["out"], model(x)["out"])


def test_build_model_inputs():
    assert autodeeplab.build_model is build_model
    by_name = build_model("paper", num_classes=2, filter_multiplier=F, aspp_channels=None)
    assert by_name.model_args["genotype"] == PAPER.to_dict()
    assert by_name.model_args["aspp_channels"] == 256  # None keeps the default
    with pytest.raises(GenotypeError, match="model genotype"):
        build_model({"format": "autodeeplab-genotype-v1"}, num_classes=2)
    with pytest.raises(TypeError):
        build_model(PAPER, 19)  # keyword-only


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"num_classes": 0}, "num_classes=0; expected a positive int"),
        ({"num_classes": True}, "num_classes=True; expected a positive int"),
        ({"filter_multiplier": 0}, "filter_multiplier=0; expected a positive int"),
        ({"filter_multiplier": 2.5}, "filter_multiplier=2.5; expected a positive int"),
        ({"aspp_channels": -1}, "aspp_channels=-1; expected a positive int"),
        ({"decoder_channels": 0}, "decoder_channels=0; expected a positive int"),
        ({"low_level_channels": 4.0}, "low_level_channels=4.0; expected a positive int"),
        ({"stem_channels": (64, 64)}, r"stem_channels=\[64, 64\]; expected three positive ints"),
        ({"stem_channels": (64, 0, 8)}, r"stem_channels=\[64, 0, 8\]; expected three"),
        (
            {"drop_path_keep_prob": 0.0},
            r"drop_path_keep_prob=0.0; expected a probability in \(0, 1\]",
        ),
        ({"drop_path_keep_prob": 1.5}, "drop_path_keep_prob=1.5; expected a probability"),
    ],
)
def test_build_model_refuses_bad_arguments_by_name(arguments, message):
    """The layers' own errors (conv groups, unpacking) would name no argument."""
    with pytest.raises(ValueError, match=message):
        build_model("paper", **{"num_classes": 3, "filter_multiplier": 4, **arguments})


def test_build_model_takes_numpy_integers():
    import numpy as np

    model = build_model("paper", num_classes=np.int64(3), filter_multiplier=np.int64(4))
    assert model.num_classes == 3


def test_the_decoded_network_has_four_levels():
    # A genotype built in code is checked against 0 and jumps only; the model takes levels 0..3.
    with pytest.raises(GenotypeError, match="layer 5 has level 4; levels run 0..3"):
        _model((0, 1, 2, 3, 4, 3))


def test_load_model_errors_name_the_checkpoint(tmp_path):
    model = _model((0, 1), aspp_channels=8, decoder_channels=8, low_level_channels=4)
    path = tmp_path / "best.pt"
    args = dict(model.model_args, num_classes=5)  # weights of a 3-class head
    save_checkpoint({"stage": "retrain", "model_args": args, "model": model.state_dict()}, path)
    with pytest.raises(ValueError, match=r"best\.pt: its weights do not fit.*classifier"):
        load_model(path)
    args = dict(model.model_args, genotype=dict(PAPER.to_dict(), path=[0, 2]))
    save_checkpoint({"stage": "retrain", "model_args": args, "model": model.state_dict()}, path)
    with pytest.raises(ValueError, match=r"best\.pt: its model_args do not build.*jumps"):
        load_model(path)
    state = {"stage": "retrain", "model_args": model.model_args, "model": model.state_dict()}
    save_checkpoint(state, path)
    assert load_model(path).model_args == model.model_args


def test_drop_path_only_in_training():
    plain = _model((0, 1, 1), drop_path_keep_prob=1.0)
    dropped = _model((0, 1, 1), drop_path_keep_prob=0.5)
    dropped.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 33, 33)
    plain.eval()
    dropped.eval()
    with torch.no_grad():
        torch.testing.assert_close(dropped(x)["out"], plain(x)["out"])
        plain.train()
        dropped.train()
        reference = plain(x)["out"]
        assert not torch.allclose(dropped(x)["out"], reference)
        dropped.set_drop_path_progress(0.0)  # start of the schedule: nothing dropped
        torch.testing.assert_close(dropped(x)["out"], reference)


def test_drop_path_zeroes_or_rescales_whole_samples():
    drop = DropPath(keep_prob=0.5).train()
    x = torch.rand(64, 3, 4, 5) + 0.5
    out = drop(x)
    kept = [bool(sample.any()) for sample in out]
    assert 5 < sum(kept) < 59  # both outcomes occur
    for sample, source, keep in zip(out, x, kept, strict=True):
        torch.testing.assert_close(sample, source / 0.5 if keep else torch.zeros_like(source))


def test_drop_path_settings_are_checked_and_progress_clipped():
    with pytest.raises(ValueError, match=r"keep probability must be in \(0, 1\], got 0.0"):
        DropPath(keep_prob=0.0)
    with pytest.raises(ValueError, match=r"layer ratio must be in \[0, 1\], got 1.5"):
        DropPath(0.5, layer_ratio=1.5)
    drop = DropPath(0.5, layer_ratio=1.0)
    drop.set_progress(2.0)
    assert drop.progress == 1.0 and drop.current_keep_prob == 0.5
    drop.set_progress(-1.0)
    assert drop.progress == 0.0 and drop.current_keep_prob == 1.0


def test_drop_path_schedule():
    model = _model((0, 1, 1, 1), drop_path_keep_prob=0.6)
    keeps = [cell.drop_path.current_keep_prob for cell in model.backbone.cells]
    assert keeps == pytest.approx([1 - 0.4 * (i + 1) / 4 for i in range(4)])  # scaled by depth
    model.set_drop_path_progress(0.5)
    last = model.backbone.cells[-1].drop_path
    assert last.current_keep_prob == pytest.approx(0.8)  # half way to 0.6
    x = torch.ones(1000, 1, 1, 1)
    torch.testing.assert_close(DropPath(0.8).train()(x).mean(), torch.tensor(1.0), atol=0.1, rtol=0)
