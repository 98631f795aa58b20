"""Where the Hydra configs live: ``conf/`` at the top of the repository (an editable install)."""

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = str(_ROOT / "conf")

if not (_ROOT / "conf" / "search.yaml").is_file():
    raise ImportError(
        f"autodeeplab's configs were not found at {CONF_DIR}; install the repository in editable "
        "mode (pip install -e .) so that conf/ stays next to the package"
    )
