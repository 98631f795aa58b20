"""``dataset_from_config``: a split checked against the config, limited to its first samples."""

import logging

import pytest
import torch

from autodeeplab.data import build_dataset
from autodeeplab.data.config import DataConfig
from autodeeplab.data.registry import dataset_from_config


def _config(**changes):
    options = {"num_classes": 3, "image_size": 16, "num_samples": 6}
    return DataConfig(name="textures", root=None, num_classes=3, options=options, **changes)


def test_a_limit_keeps_the_first_samples(caplog):
    full = build_dataset("textures", root=None, split="train", **_config().options)
    with caplog.at_level(logging.WARNING):
        limited = dataset_from_config(_config(), "train", 4)
    assert len(limited) == 4 and not caplog.records
    for i in range(4):
        assert torch.equal(limited[i][1], full[i][1])


def test_a_limit_above_the_split_size_uses_the_whole_split_and_says_so(caplog):
    with caplog.at_level(logging.WARNING):
        dataset = dataset_from_config(_config(), "val", 10)
    assert len(dataset) == 6
    (record,) = caplog.records
    message = record.getMessage()
    assert "data.val_samples=10" in message and "6 samples" in message and "textures" in message


def test_a_limit_from_another_setting_is_named_by_it(caplog):
    with caplog.at_level(logging.WARNING):
        dataset_from_config(_config(), "train", 9, limit_key="calibration_samples")
    (record,) = caplog.records
    assert record.getMessage().startswith("calibration_samples=9 but the train split")


def test_a_limit_below_one_is_refused():
    with pytest.raises(ValueError, match=r"data.train_samples=0; expected a positive number"):
        dataset_from_config(_config(), "train", 0)


def test_a_class_count_other_than_the_datasets_is_refused():
    config = _config()
    config.num_classes = 4
    with pytest.raises(ValueError, match=r"data.num_classes=4 but dataset 'textures' has 3"):
        dataset_from_config(config, "train")
