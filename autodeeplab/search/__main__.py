"""``python -m autodeeplab.search``: the Hydra command line of the search stage (thin)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.engine.config import store_schema
from autodeeplab.launch import refuse_unknown_keys, torchrun_stage, user_errors
from autodeeplab.search.config import SearchConfig, to_search_config
from autodeeplab.search.loop import run_search

store_schema("search_schema", SearchConfig)
log = logging.getLogger("autodeeplab.search")


def save_run_config(run_dir: Path, cfg: DictConfig, resume: bool) -> None:
    """``.hydra/config.yaml`` and ``overrides.yaml`` of a new run; a resume adds
    ``resume_N_overrides.yaml`` and leaves the original record alone."""
    folder = run_dir / ".hydra"
    folder.mkdir(parents=True, exist_ok=True)
    overrides = OmegaConf.create(list(HydraConfig.get().overrides.task))
    if resume:
        n = len(list(folder.glob("resume_*_overrides.yaml"))) + 1
        OmegaConf.save(overrides, folder / f"resume_{n}_overrides.yaml")
        return
    OmegaConf.save(cfg, folder / "config.yaml")
    OmegaConf.save(overrides, folder / "overrides.yaml")


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="search")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with user_errors(log, run_dir) as started:
        config = to_search_config(cfg)

        def on_start() -> None:
            started()
            save_run_config(run_dir, cfg, config.resume)

        run_search(config, run_dir, on_start=on_start)


if __name__ == "__main__":
    refuse_unknown_keys(sys.argv[1:], "search", SearchConfig, [CONF_DIR])
    with torchrun_stage(CONF_DIR, "search"):  # several processes: see README
        main()
