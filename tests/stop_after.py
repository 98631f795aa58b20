"""``python tests/stop_after.py N <module> <overrides...>``: run ``python -m <module>
<overrides...>`` (``autodeeplab.search`` or ``autodeeplab.retrain``) and kill it right after it
has written its ``N``-th record (a search's epoch, a retrain's validation) and the files of that
record: a crash at a known point, where a test that polls the run's files and then kills it
races the rest of the run.

Alone, the process kills itself (SIGKILL). Under ``torchrun`` (run this file as its script)
rank 0 stops the launcher with SIGTERM, which ends every rank, as a job scheduler would."""

from __future__ import annotations

import functools
import os
import runpy
import signal
import sys
import time

import autodeeplab.retrain.loop as retrain_loop
import autodeeplab.search.loop as search_loop


def _stop() -> None:
    if "LOCAL_RANK" in os.environ:  # a torchrun worker: its launcher ends all of them
        os.kill(os.getppid(), signal.SIGTERM)
        time.sleep(300)
    os.kill(os.getpid(), signal.SIGKILL)


def _stopping_after(records: int, write, records_argument: int):
    """``write`` (a function that writes a run's records, given as its argument number
    ``records_argument``), stopping the process once it has written ``records`` of them."""

    @functools.wraps(write)
    def wrapped(*args, **kwargs):
        write(*args, **kwargs)
        if len(args[records_argument]) >= records:
            _stop()

    return wrapped


def main(argv: list[str]) -> None:
    records, module, *overrides = argv
    count = int(records)
    # The records are write_epoch_outputs' fifth argument and write_metrics' second.
    search_loop.write_epoch_outputs = _stopping_after(count, search_loop.write_epoch_outputs, 4)
    retrain_loop.write_metrics = _stopping_after(count, retrain_loop.write_metrics, 1)
    sys.argv = [sys.argv[0], *overrides]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    raise SystemExit(f"{module} finished before its record {count}")


if __name__ == "__main__":
    main(sys.argv[1:])
