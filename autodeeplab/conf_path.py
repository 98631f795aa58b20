"""Where the Hydra configs live: ``conf/`` at the top of the repository (an editable install)."""

from __future__ import annotations

from pathlib import Path

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
    configs live in ``conf/<stage>/`` also finds the shared groups of ``conf/`` (``data``) and
    the experiment configs under ``experiments/``."""
    return "hydra.searchpath=[" + ",".join(f"file://{folder}" for folder in folders) + "]"
