"""``python -m autodeeplab.data check data=<name> data.root=<path>``: load every sample of a
dataset and print sample counts and per-class pixel frequencies (a thin Hydra app over
:mod:`autodeeplab.data.check`).

A broken dataset stops the check with one line naming the file and exit code 2. Checking writes
nothing: Hydra's run directory is a fresh folder under $TMPDIR, removed again (it stays empty),
and no config is saved.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.data import ade20k, cityscapes, folder, textures, voc  # noqa: F401  (registers)
from autodeeplab.data.check import check_dataset, format_report
from autodeeplab.data.config import DataConfig
from autodeeplab.data.registry import build_dataset, check_against_config
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.launch import refuse_unknown_keys

USAGE = """\
usage: python -m autodeeplab.data check data=<name> data.root=<path> [key=value ...]

Loads every sample of the dataset's splits and prints sample counts and pixels per class.
  data=<name>         a config of conf/data/ (textures, cityscapes, ade20k, voc, folder)
  data.root=<path>    the dataset folder
  splits=[train,val]  the splits to check (train, val, test)
  max_samples=N       check only the first N samples of each split
  progress=false      no progress bars"""


@dataclass
class CheckConfig:
    """``conf/check.yaml``."""

    # The dataset: data.name, data.root, data.num_classes, data.ignore_index, data.options; its
    # training keys (crop, scale, flip, sample counts, num_workers) are not read here.
    data: DataConfig = field(default_factory=DataConfig)
    splits: list[str] = field(default_factory=lambda: ["train", "val"])  # of train, val, test
    max_samples: int | None = None  # check only the first N samples per split (None: all)
    progress: bool = True  # progress bars on stderr


store_schema("check_schema", CheckConfig)


def run_check(config: CheckConfig) -> str:
    """Check every split of ``config.splits``; returns the report text."""
    data = config.data
    if config.max_samples is not None and config.max_samples < 1:
        raise ValueError(f"max_samples={config.max_samples}; expected a positive number or null")
    if not config.splits:
        raise ValueError("splits is empty; name at least one of train, val, test")
    reports, classes = {}, []
    for split in config.splits:
        dataset = build_dataset(data.name, root=data.root, split=split, **data.options)
        # The same consistency the search demands, found here before hours are spent.
        check_against_config(dataset, data)
        reports[split] = check_dataset(
            dataset,
            progress=config.progress,
            max_samples=config.max_samples,
            desc=f"{data.name} {split}",
        )
        classes = list(getattr(dataset, "classes", range(dataset.num_classes)))
    return format_report(data.name, reports, [str(c) for c in classes])


@hydra.main(version_base=None, config_path=CONF_DIR, config_name="check")
def main(cfg: DictConfig) -> None:
    try:
        config = to_config(cfg, CheckConfig)  # refuses keys added with +key=value
        report = run_check(config)
    except MissingMandatoryValue as err:
        print(f"error: {err.full_key} is not set; pass {err.full_key}=<value>", file=sys.stderr)
        sys.exit(2)
    except (ValueError, OSError, OmegaConfBaseException) as err:
        # A user error (DatasetError is a ValueError): one line, no traceback.
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    finally:
        # Hydra made a run directory under autodeeplab-check/ (the default hydra.run.dir); a
        # check writes nothing into it, so none is left behind. A folder named on the command
        # line is the user's and stays.
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        if run_dir.parent.name == "autodeeplab-check":
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # only if empty
    print(report)


def cli() -> None:
    """Strip the ``check`` command word, which Hydra would take for an override."""
    args = sys.argv[1:]
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return
    if args[:1] != ["check"]:
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    sys.argv = [sys.argv[0], *args[1:]]
    # A misspelt key gets the closest known one, as in the other stages (Hydra's own message
    # suggests adding it with +, which the schema then refuses).
    refuse_unknown_keys(sys.argv[1:], "check", CheckConfig, [CONF_DIR])
    main()


if __name__ == "__main__":
    cli()
