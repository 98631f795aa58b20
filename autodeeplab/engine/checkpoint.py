"""Atomic, self-describing checkpoints."""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autodeeplab.files import atomic_write


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` atomically: a crash mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda handle: torch.save(state, handle))


def load_checkpoint(
    path: str | os.PathLike,
    *,
    required: tuple[str, ...] = (),
    stage: str | None = None,
    mmap: bool = False,
) -> dict[str, Any]:
    """Load a checkpoint on the CPU, with clear errors for a missing or foreign file, one that
    lacks a ``required`` key, or one written by another stage than ``stage`` (its ``stage``
    key, where it has one). ``mmap``: tensors are read from the file when used (for a look at
    its other entries)."""
    path = check_checkpoint_path(path)
    try:
        # weights_only: a checkpoint holds tensors and plain containers, never pickled code.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, i.e. running the file's code.
        raise ValueError(
            f"checkpoint {path} is not one of this library's (a torch.save file of tensors "
            "and plain containers)"
        ) from None
    except Exception as err:  # a torn or foreign file: say which file, in one line
        if _torchscript_archive(path):  # torch's message suggests weights_only=False
            raise ValueError(
                f"checkpoint {path} is a TorchScript module (an export: load it with "
                "torch.jit.load), not a checkpoint; pass a run's checkpoints/*.pt"
            ) from None
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"checkpoint {path} cannot be read (torn, or not a torch.save file): {reason}"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(
            f"checkpoint {path} holds a {type(state).__name__}, not this library's checkpoint"
        )
    written_by = state.get("stage")
    if stage is not None and written_by is not None and written_by != stage:
        raise ValueError(f"checkpoint {path} is a {written_by} checkpoint; expected a {stage} one")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} lacks keys {missing}; is it from another stage?")
    return state


def _torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a ``torch.jit.save`` file: a zip archive like ``torch.save``'s, but
    with the module's code and constants."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def check_checkpoint_path(path: str | os.PathLike) -> Path:
    """``path`` as a ``Path`` where it is a file; else the error :func:`load_checkpoint` would
    raise (for a directory, the checkpoint files in it), for a stage to refuse before it
    writes anything."""
    if isinstance(path, str) and not path.strip():  # Path("") would be the working directory
        raise FileNotFoundError("checkpoint is empty; pass checkpoint=<a .pt file>")
    path = Path(path)
    if path.is_dir():
        # A run directory keeps its checkpoints in checkpoints/.
        found = sorted([*path.glob("*.pt"), *path.glob("checkpoints/*.pt")])
        hint = (
            f"checkpoint files there: {', '.join(map(str, found))}"
            if found
            else "no *.pt file is in it or in its checkpoints/ folder"
        )
        raise IsADirectoryError(f"checkpoint {path} is a directory; expected a file ({hint})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return path


def checkpoint_stage(path: str | os.PathLike) -> str | None:
    """The stage that wrote the checkpoint at ``path`` (its ``stage`` key), without reading its
    tensors; None where it has no such key or cannot be read."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # a torn or foreign file: the caller's own load says what is wrong
        return None
    return state.get("stage") if isinstance(state, dict) else None


def _numpy_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "bit_generator": name,
        "key": torch.from_numpy(key.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached_gaussian": cached,
    }


def rng_state() -> dict[str, Any]:
    """The states of every random generator the training loops touch."""
    state = {
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (restoring the global state)
        (
            numpy["bit_generator"],
            numpy["key"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw; a resume may see fewer (or more).
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
