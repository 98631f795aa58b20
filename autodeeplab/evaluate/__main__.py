"""``python -m autodeeplab.evaluate``: the Hydra command line of the evaluate stage (thin)."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodeeplab.conf_path import CONF_DIR, stage_search_path
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.evaluate.config import EvaluateConfig, unread_overrides
from autodeeplab.evaluate.run import run_evaluate
from autodeeplab.launch import add_overrides, refuse_unknown_keys, torchrun_stage, user_errors

store_schema("evaluate_schema", EvaluateConfig)
log = logging.getLogger("autodeeplab.evaluate")


@hydra.main(version_base=None, config_path=f"{CONF_DIR}/evaluate", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    with user_errors(log):
        config = to_config(cfg, EvaluateConfig)
        for note in unread_overrides(list(HydraConfig.get().overrides.task), config.split):
            log.warning("%s", note)
        run_evaluate(config)


if __name__ == "__main__":
    refuse_unknown_keys(
        sys.argv[1:], "evaluate", EvaluateConfig, [f"{CONF_DIR}/evaluate", CONF_DIR]
    )
    add_overrides(sys.argv, [stage_search_path(CONF_DIR)])
    with torchrun_stage(f"{CONF_DIR}/evaluate", "evaluate"):  # several processes: see README
        main()
