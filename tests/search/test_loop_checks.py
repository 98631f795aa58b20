"""Bad settings stop a search before any work, with messages that name the setting."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.search.config import SearchConfig, to_search_config
from autodeeplab.search.loop import lock_run_dir, run_search

ConfigStore.instance().store(name="search_schema", node=SearchConfig)


def _smoke(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(
            "search",
            overrides=["experiment=smoke", "progress=false", "tensorboard=false", *overrides],
        )
    return to_search_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.ignore_index=254"], "marks ignored pixels with 255"),
        (["data.num_classes=3", "data.options.num_classes=4"], "data.num_classes=3"),
        (["data.train_samples=3"], "split B has 1 samples, fewer than search.batch_size=2"),
        (["search.max_steps=0"], "search.max_steps=0"),
        (["search.epochs=0"], "search.epochs=0"),
        (["+data.options.colour=1"], "unknown option 'colour'"),
        pytest.param(
            ["device=cuda:7"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_search(_smoke(*overrides), tmp_path / "run")


def test_two_searches_never_share_a_run_directory(tmp_path):
    with lock_run_dir(tmp_path):
        with pytest.raises(FileExistsError, match="another search is running"):
            run_search(_smoke(), tmp_path)
    assert not (tmp_path / "split.json").exists()
