"""A search run directory (README: The run directory) loaded for analysis: architecture
history, per-epoch records and genotypes, the final genotype and the configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from autodeeplab.decode import blocks_for_edges
from autodeeplab.genotype import Genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.lattice import Lattice

#: The arrays ``arch_history.npz`` must hold.
HISTORY_KEYS = ("alpha", "beta", "epoch", "op_names", "edge_names", "direction_names")


@dataclass(frozen=True, eq=False)
class SearchRun:
    """Everything a search wrote that the analysis reads.

    ``alpha``: raw logits ``(epochs, edges, ops)``; ``beta``: raw logits
    ``(epochs, L, levels, 3)``; ``epochs``: the epoch number of each history row (1-based);
    ``genotypes``: the decoded genotype after each of those epochs; ``genotype``: the final one
    (``genotype.json``, or the last epoch's where the search has not finished); ``records``: the
    rows of ``metrics.jsonl``; ``config``: the run's ``.hydra/config.yaml`` as a plain dict
    (empty for a run started from Python, which has none).
    """

    path: Path
    alpha: np.ndarray
    beta: np.ndarray
    epochs: tuple[int, ...]
    op_names: tuple[str, ...]
    edge_names: tuple[str, ...]
    direction_names: tuple[str, ...]
    records: tuple[dict[str, Any], ...]
    genotypes: tuple[Genotype, ...]
    genotype: Genotype
    config: dict[str, Any]

    @property
    def name(self) -> str:
        """The run directory's name (used in titles), also for a path such as ``.``."""
        return self.path.resolve().name or str(self.path.resolve())

    @property
    def lattice(self) -> Lattice:
        """The network-level search space of the run: ``beta.shape[1:3]`` layers x levels."""
        return Lattice(self.beta.shape[1], self.beta.shape[2])

    @property
    def blocks(self) -> int:
        return blocks_for_edges(len(self.edge_names))

    def index(self, epoch: int) -> int:
        """The history row of ``epoch``: an epoch number (1, 2, ...) or, when negative, a
        position from the end (``-1`` is the last recorded epoch)."""
        count = len(self.epochs)
        if epoch < 0:
            if epoch < -count:
                raise ValueError(f"epoch {epoch}: {self.path} records only {count} epochs")
            return count + epoch
        if epoch not in self.epochs:
            raise ValueError(
                f"epoch {epoch} is not recorded in {self.path}; recorded epochs: "
                f"{list(self.epochs)} (or -1 for the last)"
            )
        return self.epochs.index(epoch)

    def epoch_number(self, epoch: int) -> int:
        """The epoch number that ``epoch`` (number or negative position) refers to."""
        return self.epochs[self.index(epoch)]

    def genotype_at(self, epoch: int = -1) -> Genotype:
        """The genotype decoded after ``epoch``."""
        return self.genotypes[self.index(epoch)]


def _require(run_dir: Path, name: str, what: str) -> Path:
    """``run_dir / name``, which must exist."""
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{run_dir} is not a search run directory with a recorded epoch: {what} {name!r} "
            f"is missing ({path})"
        )
    return path


def _read_history(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in HISTORY_KEYS if key not in data.files]
            history = {key: data[key] for key in HISTORY_KEYS if key not in missing}
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # truncated or not an .npz
        raise ValueError(f"{path}: not a readable .npz file ({err})") from None
    except ValueError as err:  # e.g. object arrays, which need pickle
        if not zipfile.is_zipfile(path):  # numpy took it for a pickle: suggests unpickling it
            raise ValueError(
                f"{path}: not a readable .npz file (not a zip archive; e.g. a Git LFS pointer "
                "or a file written by something else)"
            ) from None
        raise ValueError(f"{path}: {err}") from None
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}; expected {list(HISTORY_KEYS)}")
    epochs, alpha, beta = history["epoch"], history["alpha"], history["beta"]
    if alpha.ndim != 3 or beta.ndim != 4 or beta.shape[-1] != 3:
        raise ValueError(
            f"{path}: alpha must be (epochs, edges, ops) and beta (epochs, L, levels, 3); "
            f"got {alpha.shape} and {beta.shape}"
        )
    if not len(epochs) == len(alpha) == len(beta) or len(epochs) == 0:
        raise ValueError(
            f"{path}: {len(epochs)} epoch numbers for {len(alpha)} alpha and {len(beta)} beta rows"
        )
    if alpha.shape[1:] != (len(history["edge_names"]), len(history["op_names"])):
        raise ValueError(f"{path}: alpha {alpha.shape} does not match its edge and op names")
    if tuple(str(n) for n in history["op_names"]) != PRIMITIVES:
        raise ValueError(
            f"{path}: op_names {[str(n) for n in history['op_names']]}; expected {list(PRIMITIVES)}"
        )
    if epochs.dtype.kind not in "iu" or (np.diff(epochs) <= 0).any() or epochs[0] < 1:
        raise ValueError(f"{path}: epoch numbers {epochs.tolist()}; expected increasing integers")
    return history


def _read_records(path: Path) -> tuple[dict[str, Any], ...]:
    records = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not a UTF-8 text file ({err})") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
    return tuple(records)


def load_run(run_dir: str | os.PathLike) -> SearchRun:
    """Read a search run directory; a missing or malformed file is an error naming it."""
    path = Path(run_dir)
    if path.is_file():
        raise NotADirectoryError(
            f"{path} is a file; expected a search run directory (the folder that holds "
            "arch_history.npz and genotypes/, such as this file's)"
        )
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {path} does not exist")
    history = _read_history(_require(path, "arch_history.npz", "the architecture history"))
    levels = int(history["beta"].shape[2])
    epochs = tuple(int(e) for e in history["epoch"])
    genotypes = tuple(
        Genotype.from_json(
            _require(path, f"genotypes/epoch_{e:03d}.json", f"epoch {e}'s genotype"),
            levels=levels,
        )
        for e in epochs
    )
    # Written when the search ends: a run still going, interrupted or diverged has none.
    final_path = path / "genotype.json"
    final = Genotype.from_json(final_path, levels=levels) if final_path.exists() else genotypes[-1]
    layers, blocks = int(history["beta"].shape[1]), blocks_for_edges(history["alpha"].shape[1])
    for epoch, genotype in zip((*epochs, None), (*genotypes, final), strict=True):
        source = final_path if epoch is None else path / f"genotypes/epoch_{epoch:03d}.json"
        if (len(genotype.path), len(genotype.cell)) != (layers, blocks):
            raise ValueError(
                f"{source}: a genotype of {len(genotype.path)} layers and {len(genotype.cell)} "
                f"blocks in a run whose arch_history.npz has {layers} layers and {blocks} blocks"
            )
    return SearchRun(
        path=path,
        alpha=history["alpha"].astype(np.float64),
        beta=history["beta"].astype(np.float64),
        epochs=epochs,
        op_names=tuple(str(n) for n in history["op_names"]),
        edge_names=tuple(str(n) for n in history["edge_names"]),
        direction_names=tuple(str(n) for n in history["direction_names"]),
        records=_read_records(_require(path, "metrics.jsonl", "the metrics file")),
        genotypes=genotypes,
        genotype=final,
        config=_read_config(path / ".hydra" / "config.yaml"),
    )


def _read_config(path: Path) -> dict[str, Any]:
    """The run's configuration as the command line saved it (``{}`` where there is none),
    interpolations resolved where they can be here (an environment variable of the machine
    that ran the search may be unset on this one) and kept as written otherwise."""
    if not path.is_file():
        return {}
    try:
        config = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: not a readable config file ({err})") from None
    return _resolved(config)


def _resolved(node: DictConfig | ListConfig) -> dict[str, Any] | list[Any]:
    """``node`` as plain containers, each interpolation resolved where it can be and kept as
    written where it cannot."""
    keys = list(node.keys()) if isinstance(node, DictConfig) else range(len(node))
    out = {}
    for key in keys:
        try:
            value = node[key]
        except OmegaConfBaseException:
            value = node._get_node(key)._value()  # the interpolation as written
        out[key] = _resolved(value) if isinstance(value, DictConfig | ListConfig) else value
    return out if isinstance(node, DictConfig) else list(out.values())


def run_dir_from_env(name: str, environ: dict[str, str] | None = None) -> Path | None:
    """The run directory named by the environment variable ``name`` (``None`` where it is unset
    or empty). A relative path is taken from the directory the user started Jupyter in (the
    shell's ``PWD``), not from the kernel's working directory, which Jupyter sets to the
    notebook's folder; without ``PWD``, or where the path is not there but is in the working
    directory, from the working directory."""
    environ = os.environ if environ is None else environ
    value = environ.get(name)
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    started = Path(environ.get("PWD") or os.getcwd()) / path
    # A PWD that Jupyter's launcher (not a shell) left stale: the working directory then.
    return started if started.exists() or not path.exists() else path


def smoke_search(run_dir: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> Path:
    """Run ``python -m autodeeplab.search experiment=smoke`` (a few seconds) into ``run_dir``
    (default: a new temporary directory) and return the run directory."""
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="autodeeplab-")) / "smoke"
    run_dir = Path(run_dir).resolve()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "autodeeplab.search",
        "experiment=smoke",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    result = subprocess.run(command, cwd=run_dir.parent, capture_output=True, text=True)
    if result.returncode != 0:
        # The search logs its errors to stdout, Python's tracebacks go to stderr.
        raise RuntimeError(
            f"the smoke search into {run_dir} failed ({result.returncode}):\n"
            + (result.stdout[-2000:] + result.stderr[-2000:]).strip()
        )
    return run_dir
