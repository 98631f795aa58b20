"""The command-line overrides that make every rank use rank 0's run directory."""

import datetime

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.launch import _hydra_value, rank_overrides
from autodeeplab.search.config import SearchConfig

ConfigStore.instance().store(name="search_schema", node=SearchConfig)


@pytest.mark.parametrize(
    "text",
    ["runs/search/2026-01-02_03-04-05", "/data/my runs/a,b=c", "it's [1]", "C:\\r\\", "x\\'"],
)
def test_values_survive_hydras_override_parser(text):
    override = OverridesParser.create().parse_override(f"hydra.run.dir={_hydra_value(text)}")
    assert override.value() == text


def test_rank_0_resolves_the_run_directory_once():
    (run_dir,) = rank_overrides(CONF_DIR, "search", ["experiment=smoke", "seed=3"])
    year = datetime.datetime.now().year
    assert run_dir.startswith(f"hydra.run.dir=runs/search/{year}-")
    (mine,) = rank_overrides(CONF_DIR, "search", ["hydra.run.dir=out/${now:%Y}/x", "--info"])
    assert mine == f"hydra.run.dir=out/{year}/x"


def test_a_config_error_is_left_to_hydra():
    assert rank_overrides(CONF_DIR, "search", ["search.epocs=3"]) == []
