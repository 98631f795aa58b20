"""Run directories shared by the stages: never reused by accident, locked while in use, and
resumed only with the settings they started with."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from autodeeplab.engine import distributed
from autodeeplab.engine.checkpoint import checkpoint_stage, load_checkpoint

CHECKPOINT = Path("checkpoints") / "last.pt"

#: Settings that may change when a run is resumed (with what they hold, for a group); every
#: other key must match the checkpoint. ``data.root``: the same data may have moved (to a
#: job's scratch disk, say); that it is the same data is the user's word.
RUNTIME_KEYS = (
    "resume",
    "device",
    "threads",
    "progress",
    "tensorboard",
    "data.root",
    "data.num_workers",
)

#: Settings the schemas no longer have: a run saved with one resumes without it (nothing
#: reads it any more).
RETIRED_KEYS = ("train.val_batch_size",)


def _may_differ(key: str) -> bool:
    """Whether a resumed run's ``key`` may differ from the checkpoint's."""
    return key in RETIRED_KEYS or any(key == k or key.startswith(k + ".") for k in RUNTIME_KEYS)


def check_run_dir(
    run_dir: Path, resume: bool, outputs: tuple[str, ...] = (), stage: str | None = None
) -> None:
    """Refuse to start over an earlier run (nothing is overwritten), to resume nothing, or to
    resume another stage's run (``stage``: this one's name, as its checkpoints record it).
    ``outputs``: files besides the checkpoint that mark an earlier run, as paths or glob
    patterns relative to ``run_dir``. (Not ``.hydra/config.yaml``: with ``hydra.output_subdir``
    set, Hydra writes it before a new run starts.)"""
    checkpoint = run_dir / CHECKPOINT
    other = checkpoint_stage(checkpoint) if checkpoint.exists() else None
    if stage is not None and other is not None and other != stage:
        raise FileExistsError(
            f"{run_dir} holds a {other} run ({CHECKPOINT}), which a {stage} cannot continue or "
            "overwrite; choose another hydra.run.dir"
        )
    earlier = [CHECKPOINT] if checkpoint.exists() else []
    for pattern in outputs:
        earlier += sorted(p.relative_to(run_dir) for p in run_dir.glob(pattern))
    if not resume and earlier and not checkpoint.exists():
        raise FileExistsError(
            f"{run_dir} holds an earlier run that stopped before its first checkpoint "
            f"({', '.join(map(str, earlier))}): it cannot be resumed, and earlier outputs are "
            "never overwritten; choose another hydra.run.dir"
        )
    if not resume and earlier:
        raise FileExistsError(
            f"{run_dir} already holds a run ({', '.join(map(str, earlier))}); pass "
            "resume=true to continue it or choose another hydra.run.dir (earlier outputs are "
            "never overwritten)"
        )
    if resume and not checkpoint.exists():
        raise FileNotFoundError(
            f"resume=true but there is no checkpoint at {checkpoint}: pass hydra.run.dir=<the "
            "directory of the run to resume> (a run that stopped before its first checkpoint "
            "cannot be resumed; start it again in another hydra.run.dir)"
        )


def lock_run_dir(run_dir: Path) -> IO:
    """Hold an exclusive lock on ``run_dir`` for this process (released when it exits, also
    when it is killed), so two runs never write into one directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".lock"
    while True:
        handle = open(path, "a")  # noqa: SIM115 (held for the run's lifetime)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FileExistsError(f"another run is using {run_dir}") from None
        # A refused job removes the lock file it made (open_run_dir): a lock taken on that
        # file just before it went locks nothing another job can see, so take it again.
        try:
            if os.fstat(handle.fileno()).st_ino == path.stat().st_ino:
                return handle
        except FileNotFoundError:
            pass
        handle.close()


def check_resume_config(current: dict[str, Any], saved: dict[str, Any], path: Path) -> None:
    """A resumed run must use the settings it started with (except :data:`RUNTIME_KEYS`);
    ``current`` and ``saved`` are the configs as plain dicts."""
    differing = [
        f"{key}: {saved_value!r} -> {current_value!r}"
        for key, saved_value, current_value in _diff(saved, current)
        if not _may_differ(key)
    ]
    if differing:
        record = path.parent.parent / ".hydra" / "overrides.yaml"
        original = f" ({record} lists the original command's)" if record.is_file() else ""
        raise ValueError(
            f"resume=true with settings that differ from {path}: "
            + "; ".join(differing)
            + f". Resume with the original settings{original}, or start a new run."
        )


def _diff(a: Any, b: Any, prefix: str = "") -> Iterator[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            yield from _diff(a.get(key), b.get(key), f"{prefix}{key}.")
    elif a != b:
        yield prefix.rstrip("."), a, b


def check_resume_world_size(saved: int, current: int, path: Path) -> None:
    """A resumed run must have as many processes as it started with: the number sets the
    global batch (processes x batch size) and the shards each process reads."""
    if saved != current:
        raise ValueError(
            f"resume=true with {current} process(es), but {path} was written by a run of "
            f"{saved} (the global batch is processes x batch size). Resume with the same "
            "number of processes (torchrun --nnodes/--nproc_per_node), or start a new run."
        )


@contextmanager
def open_run_dir(
    run_dir: Path,
    *,
    resume: bool,
    config: dict[str, Any],
    outputs: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    stage: str | None = None,
    check_state: Callable[[dict[str, Any]], None] | None = None,
    complete: Callable[[dict[str, Any]], bool] | None = None,
    on_start: Callable[[], None] | None = None,
) -> Iterator[dict[str, Any] | None]:
    """Lock and check ``run_dir`` (:func:`lock_run_dir`, :func:`check_run_dir`), load and check
    the checkpoint to resume (``config`` as a plain dict, ``required`` its keys, ``stage`` the
    stage that must have written it, then the
    caller's ``check_state``) and call ``on_start``; yields the checkpoint (None for a new run)
    and holds the lock until the end. Every refusal comes before ``on_start``, which records
    the command in the directory. A resumed checkpoint gets ``"complete"``: what ``complete``
    says of it (the run has nothing left to do), else False; for a complete run ``on_start``
    is not called, so that resuming it writes nothing.

    Under ``torchrun`` only rank 0 touches the directory; the others wait for its checks, then
    get the checkpoint from it, or raise its error (no rank is left waiting for another)."""
    handle: IO | None = None

    def start() -> dict[str, Any] | None:
        nonlocal handle
        made_lock = not (run_dir / ".lock").exists()
        handle = lock_run_dir(run_dir)
        try:
            check_run_dir(run_dir, resume, outputs, stage)
            state = None
            if resume:
                path = run_dir / CHECKPOINT
                state = load_checkpoint(path, required=required, stage=stage)
                check_resume_config(config, state["config"], path)
                check_resume_world_size(state.get("world_size", 1), distributed.world_size(), path)
                if check_state is not None:
                    check_state(state)
                state["complete"] = complete is not None and complete(state)
            if on_start is not None and not (state is not None and state["complete"]):
                on_start()
            return state
        except BaseException:
            if made_lock:  # refused before anything was written: no lock file is left either
                (run_dir / ".lock").unlink(missing_ok=True)
            handle.close()
            handle = None
            raise

    state = distributed.run_on_main(start)
    try:
        yield state
    finally:
        if handle is not None:
            handle.close()
