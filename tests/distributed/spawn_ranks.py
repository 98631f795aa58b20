"""Run a function on several local processes joined by gloo over 127.0.0.1, as ``torchrun``
would start them (``RANK``, ``WORLD_SIZE``, ... then ``autodeeplab.engine.distributed.setup``),
and collect what each rank returns."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from autodeeplab.engine import distributed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world: int, port: int, out: Path, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        CUDA_VISIBLE_DEVICES="",  # gloo on the CPU, as in the suite's CI
    )
    torch.set_num_threads(1)
    distributed.setup()
    clean = False
    try:
        torch.save(fn(*args), out / f"rank{rank}.pt")
        clean = True
    finally:
        distributed.teardown(clean)


def run_ranks(fn: Callable, out: Path, *args: Any, world: int = 2) -> list[Any]:
    """``fn(*args)`` on ``world`` processes (``fn`` a module-level function); the values they
    returned, in rank order. An exception on a rank fails the call with its traceback."""
    out.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        try:
            mp.spawn(_entry, args=(fn, world, _free_port(), out, args), nprocs=world, join=True)
            break
        except mp.ProcessRaisedException as error:
            # The free port was taken between _free_port and rank 0's listening on it (by
            # another test process, say): draw another.
            if "EADDRINUSE" not in str(error) or attempt == 2:
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
