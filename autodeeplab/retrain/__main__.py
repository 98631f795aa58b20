"""``python -m autodeeplab.retrain``: the Hydra command line of the retrain stage (thin)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodeeplab.conf_path import CONF_DIR, EXPERIMENTS_DIR, stage_search_path
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.launch import add_overrides, refuse_unknown_keys, torchrun_stage, user_errors
from autodeeplab.retrain.config import RetrainConfig
from autodeeplab.retrain.loop import run_retrain
from autodeeplab.search.__main__ import save_run_config

store_schema("retrain_schema", RetrainConfig)
log = logging.getLogger("autodeeplab.retrain")


@hydra.main(version_base=None, config_path=f"{CONF_DIR}/retrain", config_name="retrain")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with user_errors(log, run_dir) as started:
        config = to_config(cfg, RetrainConfig)

        def on_start() -> None:
            started()
            save_run_config(run_dir, cfg, config.resume)

        run_retrain(config, run_dir, on_start=on_start)


if __name__ == "__main__":
    folders = [f"{CONF_DIR}/retrain", CONF_DIR, f"{EXPERIMENTS_DIR}/retrain"]
    refuse_unknown_keys(sys.argv[1:], "retrain", RetrainConfig, folders)
    add_overrides(sys.argv, [stage_search_path(CONF_DIR, f"{EXPERIMENTS_DIR}/retrain")])
    with torchrun_stage(f"{CONF_DIR}/retrain", "retrain"):  # several processes: see README
        main()
