"""Run directories shared by the stages: never reused by accident, locked while in use, and
resumed only with the settings they started with."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

CHECKPOINT = Path("checkpoints") / "last.pt"

#: Settings that may change when a run is resumed; every other key must match the checkpoint.
RUNTIME_KEYS = ("resume", "device", "threads", "progress", "tensorboard")


def check_run_dir(run_dir: Path, resume: bool, outputs: tuple[str, ...] = ()) -> None:
    """Refuse to start over an earlier run (nothing is overwritten) or to resume nothing.
    ``outputs``: files besides the checkpoint that mark an earlier run."""
    checkpoint = run_dir / CHECKPOINT
    earlier = [p for p in (CHECKPOINT, *map(Path, outputs)) if (run_dir / p).exists()]
    if not resume and earlier:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(map(str, earlier))}); pass "
            "resume=true to continue it or choose another hydra.run.dir (earlier outputs are "
            "never overwritten)"
        )
    if resume and not checkpoint.exists():
        raise FileNotFoundError(
            f"resume=true but there is no checkpoint at {checkpoint} (a run stopped before its "
            "first epoch ended cannot be resumed; start it in another hydra.run.dir)"
        )


def lock_run_dir(run_dir: Path) -> IO:
    """Hold an exclusive lock on ``run_dir`` for this process (released when it exits, also
    when it is killed), so two runs never write into one directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "w")  # noqa: SIM115 (held for the run's lifetime)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise FileExistsError(f"another run is using {run_dir}") from None
    return handle


def check_resume_config(current: dict[str, Any], saved: dict[str, Any], path: Path) -> None:
    """A resumed run must use the settings it started with (except :data:`RUNTIME_KEYS`);
    ``current`` and ``saved`` are the configs as plain dicts."""
    differing = [
        f"{key}: {saved_value!r} -> {current_value!r}"
        for key, saved_value, current_value in _diff(saved, current)
        if key.split(".")[0] not in RUNTIME_KEYS
    ]
    if differing:
        raise ValueError(
            f"resume=true with settings that differ from {path}: "
            + "; ".join(differing)
            + ". Resume with the original settings, or start a new run."
        )


def _diff(a: Any, b: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip("."), a, b
