"""``python -m autodeeplab.export``: the Hydra command line of the export stage (thin)."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from autodeeplab.conf_path import CONF_DIR, stage_search_path
from autodeeplab.engine import distributed
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.export.config import ExportConfig
from autodeeplab.export.run import run_export
from autodeeplab.launch import add_overrides, refuse_unknown_keys, user_errors

store_schema("export_schema", ExportConfig)
log = logging.getLogger("autodeeplab.export")


@hydra.main(version_base=None, config_path=f"{CONF_DIR}/export", config_name="export")
def main(cfg: DictConfig) -> None:
    with user_errors(log):
        run_export(to_config(cfg, ExportConfig))


if __name__ == "__main__":
    if distributed.launched():  # every rank would export the same files into one folder
        print("autodeeplab.export runs in one process: start it without torchrun", file=sys.stderr)
        sys.exit(2)
    refuse_unknown_keys(sys.argv[1:], "export", ExportConfig, [f"{CONF_DIR}/export", CONF_DIR])
    add_overrides(sys.argv, [stage_search_path(CONF_DIR)])
    main()
