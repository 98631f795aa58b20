"""Compose the retrain and evaluate configs as their command lines do."""

import pytest
from hydra import compose, initialize_config_dir

from autodeeplab.conf_path import CONF_DIR, EXPERIMENTS_DIR, stage_search_path
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.evaluate.config import EvaluateConfig
from autodeeplab.retrain.config import RetrainConfig

store_schema("retrain_schema", RetrainConfig)
store_schema("evaluate_schema", EvaluateConfig)


def compose_stage(stage, schema, overrides, extra_paths=()):
    search_path = stage_search_path(CONF_DIR, *extra_paths)
    with initialize_config_dir(config_dir=f"{CONF_DIR}/{stage}", version_base=None):
        cfg = compose(stage, overrides=[*overrides, search_path])
    return to_config(cfg, schema)


@pytest.fixture(scope="session")
def retrain_config():
    def make(*overrides):
        return compose_stage(
            "retrain",
            RetrainConfig,
            ["progress=false", "tensorboard=false", "threads=1", *overrides],
            (f"{EXPERIMENTS_DIR}/retrain",),
        )

    return make


@pytest.fixture
def evaluate_config():
    def make(*overrides):
        return compose_stage(
            "evaluate", EvaluateConfig, ["progress=false", "threads=1", *overrides]
        )

    return make
