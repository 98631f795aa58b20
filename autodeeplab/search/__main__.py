"""``python -m autodeeplab.search``: the Hydra command line of the search stage (thin)."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.search.config import SearchConfig, to_search_config
from autodeeplab.search.loop import run_search

ConfigStore.instance().store(name="search_schema", node=SearchConfig)
log = logging.getLogger("autodeeplab.search")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    try:
        config = to_search_config(cfg)
        run_search(config, HydraConfig.get().runtime.output_dir)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        # A user error: say what is wrong, without a traceback.
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
