import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.engine.config import store_schema
from autodeeplab.search.config import SearchConfig, check_search_config, to_search_config

store_schema("search_schema", SearchConfig)


def _compose(overrides=()):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return compose("search", overrides=list(overrides))


def _options(group):
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in ("data", "space", "optim", "search") for o in _options(g)]
    + [f"experiment={o}" for o in _options("experiment")],
)
def test_every_config_option_composes_into_the_schema(override):
    overrides = [override]
    if override in (
        "data=cityscapes",
        "experiment=cityscapes_paper",
        "data=voc",
        "data=ade20k",
        "data=folder",
    ):
        overrides.append("data.root=/data/set")  # required: `???` in the file
    if override == "data=folder":
        overrides.append("data.num_classes=3")
    cfg = to_search_config(_compose(overrides))
    assert isinstance(cfg, SearchConfig)
    check_search_config(cfg)  # every shipped setting is in range


def test_paper_experiment_has_the_paper_settings():
    cfg = to_search_config(_compose(["experiment=cityscapes_paper", "data.root=x"]))
    assert (cfg.space.layers, cfg.space.levels, cfg.space.filter_multiplier) == (12, 4, 8)
    assert (cfg.search.epochs, cfg.search.arch_start_epoch, cfg.search.batch_size) == (40, 20, 2)
    assert (cfg.optim.lr, cfg.optim.lr_min, cfg.optim.arch_lr) == (0.025, 0.001, 3e-3)
    assert (cfg.data.crop_size, cfg.data.num_classes) == (321, 19)
    # Searched at half resolution; plain `data=cityscapes` (retrain, evaluate) is full size.
    assert cfg.data.options["half_resolution"] is True
    plain = to_search_config(_compose(["data=cityscapes", "data.root=x"]))
    assert plain.data.options["half_resolution"] is False


def test_overrides_reach_the_typed_config():
    cfg = to_search_config(_compose(["search.epochs=3", "space.layers=4", "seed=7"]))
    assert (cfg.search.epochs, cfg.space.layers, cfg.seed) == (3, 4, 7)


def test_dataset_options_take_new_keys_but_other_levels_stay_closed():
    cfg = to_search_config(_compose(["data.options.num_samples=100"]))
    assert cfg.data.options["num_samples"] == 100
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["data.optoins.num_samples=100"])
    assert "optoins" in str(err.value.__cause__ or err.value)


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigCompositionException) as err:
        _compose(["search.epohcs=3"])
    assert "epohcs" in str(err.value.__cause__ or err.value)


def test_added_key_is_refused_by_the_schema_check():
    with pytest.raises((ValueError, ConfigCompositionException, ConfigKeyError)) as err:
        to_search_config(_compose(["+search.epohcs=3"]))
    assert "unknown config key 'search.epohcs' (did you mean 'search.epochs'?)" in str(err.value)
    with pytest.raises(ValueError) as err:
        to_search_config(_compose(["+search.zzz=3"]))  # nothing close: no guess
    assert "unknown config key 'search.zzz'; known keys here: [" in str(err.value)


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises((ConfigCompositionException, ValidationError)) as err:
        _compose(["search.epochs=many"])
    assert "epochs" in str(err.value.__cause__ or err.value)


@pytest.mark.slow
def test_cli_reports_unknown_group_option_and_bad_key(tmp_path):
    base = [sys.executable, "-m", "autodeeplab.search", f"hydra.run.dir={tmp_path / 'r'}"]
    bad_group = subprocess.run(base + ["data=nope"], capture_output=True, text=True, cwd=tmp_path)
    assert bad_group.returncode != 0
    assert "data" in bad_group.stderr and "nope" in bad_group.stderr
    added = subprocess.run(base + ["+space.width=3"], capture_output=True, text=True, cwd=tmp_path)
    assert added.returncode != 0
    assert "width" in added.stderr + added.stdout


@pytest.mark.parametrize("option", ["cityscapes", "voc", "ade20k", "folder"])
def test_datasets_on_disk_require_a_root(option):
    with pytest.raises(Exception, match="data.root"):
        to_search_config(_compose([f"data={option}"]))


def test_unknown_key_message_follows_dotted_keys_into_the_schema():
    from autodeeplab.engine.config import unknown_key_message
    from autodeeplab.retrain.config import RetrainConfig

    assert unknown_key_message("search.epochs", SearchConfig) is None
    assert unknown_key_message("data.root", SearchConfig) is None
    assert unknown_key_message("serch.epochs", SearchConfig).startswith(
        "unknown config key 'serch' (did you mean 'search'?)"
    )
    assert "'data.rot' (did you mean 'data.root'?)" in unknown_key_message("data.rot", SearchConfig)
    assert unknown_key_message("loss.terms.dice", RetrainConfig) is None  # a mapping's keys
    assert "known keys here: ['aspp_channels'" in unknown_key_message("model.x", RetrainConfig)
