"""Fixtures of the export tests: a smoke retrain checkpoint and composed export configs."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from autodeeplab.conf_path import CONF_DIR, EXPERIMENTS_DIR, stage_search_path
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.export import ExportConfig
from autodeeplab.retrain.config import RetrainConfig
from autodeeplab.retrain.loop import run_retrain

store_schema("retrain_schema", RetrainConfig)
store_schema("export_schema", ExportConfig)


def compose_stage(stage, schema, overrides, extra_paths=()):
    search_path = stage_search_path(CONF_DIR, *extra_paths)
    with initialize_config_dir(config_dir=f"{CONF_DIR}/{stage}", version_base=None):
        cfg = compose(stage, overrides=[*overrides, search_path])
    return to_config(cfg, schema)


@pytest.fixture(scope="session")
def smoke_checkpoint(tmp_path_factory) -> Path:
    """``runs/<run>/checkpoints/best.pt`` of the smoke retrain (paper genotype, F = 4, 5 classes,
    embedded textures), 2 iterations at lr 0.001: the full smoke run (24 iterations at lr 0.05)
    reaches logits of ~1e6, where float32 rounding alone exceeds a 1e-4 absolute difference."""
    run_dir = tmp_path_factory.mktemp("retrain_run")
    cfg = compose_stage(
        "retrain",
        RetrainConfig,
        [
            "experiment=smoke",
            "train.iterations=2",
            "train.val_every=2",
            "train.lr=0.001",
            "progress=false",
            "tensorboard=false",
            "threads=1",
        ],
        (f"{EXPERIMENTS_DIR}/retrain",),
    )
    run_retrain(cfg, run_dir)
    return run_dir / "checkpoints" / "best.pt"


@pytest.fixture(scope="session")
def export_config():
    """``export_config(*overrides)``: the export config as the command line composes it, with
    the smoke experiment and one thread."""

    def make(*overrides: str) -> ExportConfig:
        return compose_stage("export", ExportConfig, ["experiment=smoke", "threads=1", *overrides])

    return make
