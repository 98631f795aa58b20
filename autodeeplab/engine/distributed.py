"""Several processes under ``torchrun``: the process group, rank queries and the few collectives
the stages use.

Without a process group (a plain ``python -m ...``), or with a group of one, every function here is
the identity or does nothing, so the stages run exactly as in a single process. ``setup()`` reads
the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``); the collectives need every rank to call them in the same order.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from autodeeplab.engine.metrics import ConfusionMatrix

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several started by ``torchrun`` (``WORLD_SIZE > 1``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> None:
    """Join the process group of a ``torchrun`` launch (nothing for a single process; nothing
    when a group exists already). The backend is NCCL for CUDA tensors when a GPU is visible and
    gloo otherwise; gloo also carries the CPU tensors and pickled objects of a CUDA run (run
    directory, checkpoints, ``device=cpu``). Each process uses the GPU ``LOCAL_RANK``."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    backend = "gloo"
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank < torch.cuda.device_count():  # more processes than GPUs: device=cpu
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)


def teardown(clean: bool = True) -> None:
    """Leave the process group. After a clean run every rank meets at a barrier first: gloo can
    abort at interpreter exit when one rank destroys the group while another still talks to it.
    After an error (``clean=False``) there is no barrier, which could wait forever."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 in a single process."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes, 1 in a single process."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes the run directory, the logs and the checkpoints."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``device`` for this process: under ``torchrun`` a CUDA device without an index becomes
    this process's GPU (``cuda:LOCAL_RANK``, set by :func:`setup`)."""
    if device.type == "cuda" and device.index is None and _active():
        # cuda:LOCAL_RANK when setup() could select it; with one visible GPU per process (a
        # scheduler's binding) that GPU, which is the current device there.
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors go for a collective: the CPU with gloo, else the GPU."""
    if "gloo" in str(dist.get_backend()):
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def barrier() -> None:
    if _active():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank."""
    if not _active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every rank's ``obj``, in rank order (``[obj]`` in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give its result to every rank; when it raises, every rank
    raises the same error (rank 0 its own), so no rank waits for a rank that has given up."""
    if not _active():
        return fn()
    result, error, original = None, None, None
    if is_main():
        try:
            result = fn()
        except Exception as err:
            original, error = err, _portable(err)
    result, error = broadcast_object((result, error))
    if original is not None:
        raise original
    if error is not None:
        raise error
    return result


def _buckets(tensors: Iterable[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` grouped by (device, dtype): one flat buffer per group and collective."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for tensor in tensors:
        groups.setdefault((tensor.device, tensor.dtype), []).append(tensor)
    return list(groups.values())


def _scatter_back(flat: torch.Tensor, tensors: Sequence[torch.Tensor]) -> None:
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


@torch.no_grad()
def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place (e.g. gradients). Every rank
    ends with bit-identical values: the sum is reduced once and copied to all."""
    if not _active():
        return
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.all_reduce(flat)  # SUM: gloo has no AVG
        flat /= world_size()
        _scatter_back(flat, bucket)


@torch.no_grad()
def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank ``src``'s values, in place."""
    if not _active():
        return
    for bucket in _buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        dist.broadcast(flat, src=src)
        _scatter_back(flat, bucket)


def broadcast_module_(module: nn.Module, *, buffers_only: bool = False, src: int = 0) -> None:
    """Give every rank rank ``src``'s parameters and buffers (or only its buffers: BatchNorm
    running statistics, which each rank updates from its own batches)."""
    tensors = list(module.buffers())
    if not buffers_only:
        tensors = [p.data for p in module.parameters()] + tensors
    broadcast_(tensors, src=src)


def average(values: Sequence[float]) -> list[float]:
    """``values`` averaged element-wise over the ranks (unchanged in a single process)."""
    if not _active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    all_reduce_mean_([tensor])
    return tensor.tolist()


def total(values: Sequence[float]) -> list[float]:
    """``values`` summed element-wise over the ranks (unchanged in a single process)."""
    if not _active():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor)
    return tensor.tolist()


@torch.no_grad()
def all_reduce_confusion_(matrix: ConfusionMatrix) -> ConfusionMatrix:
    """Sum ``matrix``'s counts over the ranks, in place: each rank scored a shard of a dataset
    and every rank then holds the matrix of the whole dataset. Returns ``matrix``."""
    if not _active():
        return matrix
    # A rank with an empty shard keeps its matrix on the CPU: reduce on one agreed device.
    counts = matrix.matrix.to(_collective_device())
    dist.all_reduce(counts)
    matrix.reset()
    return matrix.merge(ConfusionMatrix.from_counts(counts, matrix.ignore_index))
