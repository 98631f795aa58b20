"""Where the Hydra configs live (``conf/`` at the top of the repository, an editable install),
the search path of a stage, and the config groups its ``--help`` lists."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(_ROOT / "conf")
EXPERIMENTS_DIR = str(_ROOT / "experiments")

if not (_ROOT / "conf" / "search.yaml").is_file():
    raise ImportError(
        f"autodeeplab's configs were not found at {CONF_DIR}; install the repository in editable "
        "mode (pip install -e .) so that conf/ stays next to the package"
    )


def stage_search_path(*folders: str) -> str:
    """The Hydra override that adds ``folders`` to the config search path: a stage whose own
    configs live in ``conf/<stage>/`` also finds the shared groups of ``conf/`` (``data``, and
    ``hydra/help``, which every stage's defaults list picks, so composing any stage needs
    ``conf/`` on its search path) and the experiment configs under ``experiments/``."""
    return "hydra.searchpath=[" + ",".join(f"file://{folder}" for folder in folders) + "]"


def stage_config_groups(*, _root_: DictConfig) -> str:
    """The config groups a stage's ``--help`` lists, one ``group: option, ...`` line each: the
    groups of the stage's defaults list (``hydra.runtime.choices`` of the composed config
    ``_root_``) with their options on the stage's search path. A group the stage's own config
    folder has (``conf/retrain/experiment``) lists only the options of the stage's folders, not
    those of the shared ``conf/`` root, which serves the groups a stage shares (``data``).

    Hydra's own listing shows every group of the primary config folder, which for the search
    (``conf/``) includes the other stages' folders and for the other stages omits ``data``."""
    runtime = _root_.hydra.runtime
    sources = [(Path(s.path), s.provider) for s in runtime.config_sources if s.schema == "file"]
    primary = next(path for path, provider in sources if provider == "main")
    shared = Path(CONF_DIR)
    lines = []
    for group in sorted(g for g in runtime.choices if g != "hydra" and not g.startswith("hydra/")):
        folders = [path / group for path, _ in sources if (path / group).is_dir()]
        if primary != shared and (primary / group).is_dir():
            folders = [folder for folder in folders if folder != shared / group]
        options = sorted({file.stem for folder in folders for file in folder.glob("*.yaml")})
        lines.append(f"{group}: {', '.join(options)}")
    return "\n".join(lines)


OmegaConf.register_new_resolver("autodeeplab_config_groups", stage_config_groups, replace=True)
