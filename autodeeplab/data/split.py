"""Search-time data splits (A for weights, B for architecture) and seeded augmentation.

Augmentation randomness is a pure function of ``(seed, epoch, dataset index)`` and the shuffle
order of a function of ``(seed, epoch)``, so a run gives identical batches whatever the number
of loader workers and whether or not it was resumed mid-training.
"""

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from autodeeplab.files import atomic_write_text


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (neighbouring inputs give unrelated streams)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def search_split(num_samples: int, seed: int) -> tuple[list[int], list[int]]:
    """Random disjoint halves (A, B) of ``range(num_samples)``, sorted; A gets the odd one."""
    if num_samples < 2:
        raise ValueError(
            f"search_split needs num_samples >= 2 to form two halves, got {num_samples}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(num_samples, generator=generator).tolist()
    half = (num_samples + 1) // 2
    return sorted(perm[:half]), sorted(perm[half:])


def _check_halves(a: Sequence[int], b: Sequence[int], where: str) -> None:
    for key, half in (("A", a), ("B", b)):
        if not half:
            raise ValueError(f"{where}: split {key} is empty")
        bad = [i for i in half if isinstance(i, bool) or not isinstance(i, int) or i < 0]
        if bad:
            raise ValueError(f"{where}: split {key} has non-index entries {bad[:5]}")
        if len(set(half)) != len(half):
            raise ValueError(f"{where}: split {key} contains duplicate indices")
    overlap = sorted(set(a) & set(b))
    if overlap:
        raise ValueError(f"{where}: splits A and B overlap on indices {overlap[:10]}")


def save_split(
    path: str | os.PathLike, a: Sequence[int], b: Sequence[int], *, seed: int, dataset: str
) -> None:
    """Write ``{"seed", "dataset", "A", "B"}`` as JSON, atomically (temp file + os.replace)."""
    a, b = [int(i) for i in a], [int(i) for i in b]
    _check_halves(a, b, f"save_split({os.fspath(path)!r})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"seed": int(seed), "dataset": dataset, "A": a, "B": b}
    # A crash mid-write must never leave a truncated split file behind for a resumed run.
    atomic_write_text(path, json.dumps(payload))


def load_split(path: str | os.PathLike) -> tuple[list[int], list[int]]:
    """Read a file written by :func:`save_split`; returns the validated halves (A, B)."""
    where = f"split file {os.fspath(path)!r}"
    try:
        with open(path) as f:
            payload = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(payload, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(payload).__name__}")
    missing = [key for key in ("seed", "dataset", "A", "B") if key not in payload]
    if missing:
        raise ValueError(f"{where}: missing keys {missing}; expected seed, dataset, A, B")
    a, b = payload["A"], payload["B"]
    if not isinstance(a, list) or not isinstance(b, list):
        raise ValueError(f"{where}: A and B must be lists of indices")
    _check_halves(a, b, where)
    return a, b


class SeededSubset(Dataset):
    """``dataset[indices[i]]`` passed through ``transform(image, mask, generator)``.

    The generator is seeded from ``(seed, epoch, dataset index)``, so an item's augmentation
    does not depend on worker assignment, access order or resumption; call :meth:`set_epoch`
    before each epoch to get fresh augmentations.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int],
        transform: Callable | None,
        *,
        seed: int,
    ) -> None:
        n = len(dataset)
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"indices {bad[:5]} out of range for a dataset of {n} samples")
        self.dataset = dataset
        self.indices = [int(i) for i in indices]
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream for ``epoch``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = self.indices[i]
        image, mask = self.dataset[index]
        if self.transform is None:
            return image, mask
        generator = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, index))
        return self.transform(image, mask, generator)

    # Convenience pass-throughs so training code can read dataset metadata off the subset.
    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def ignore_index(self) -> int:
        return self.dataset.ignore_index

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes


def pad_collate(
    batch: Sequence[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ``(image (3, H, W), mask (H, W))`` items of different sizes: images are padded
    with 0 and masks with ``ignore_index`` at the bottom and right to the largest size, so the
    padding never counts in the loss or the metrics."""
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], height, width)
    masks = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for i, (image, mask) in enumerate(batch):
        images[i, :, : image.shape[-2], : image.shape[-1]] = image
        masks[i, : mask.shape[-2], : mask.shape[-1]] = mask
    return images, masks


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int = 0,
    drop_last: bool = True,
    pin_memory: bool = False,
    ignore_index: int = 255,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """DataLoader for one epoch whose order depends only on ``(seed, epoch)``.

    Calls ``dataset.set_epoch(epoch)`` when available. Build a new loader every epoch: the
    order is reproducible for the loader's first pass.

    With ``world_size > 1`` the loader yields process ``rank``'s shard (:func:`shard_order`):
    every ``world_size``-th sample of the single-process order, from position ``rank``. The
    shards are disjoint and, with ``drop_last``, of equal length, and batch ``i`` of all ranks
    together holds the samples of batch ``i`` of a single process with a batch of
    ``world_size * batch_size``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected at least 1")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} with world_size={world_size}")
    if drop_last and len(dataset) // world_size < batch_size:
        ranks = f" over {world_size} processes" if world_size > 1 else ""
        raise ValueError(
            f"dataset has {len(dataset)} samples{ranks}, fewer than batch_size={batch_size} "
            f"{'per process ' if ranks else ''}with drop_last=True, so the loader would yield "
            "no batches"
        )
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    if world_size > 1:
        order = {
            "sampler": shard_order(
                len(dataset),
                generator if shuffle else None,
                rank=rank,
                world_size=world_size,
                even=drop_last,
            ),
            "generator": generator,  # the iterator's seed, never from the global generator
        }
    else:  # the single-process order (kept as it was, so runs stay reproducible)
        order = {"shuffle": shuffle, "generator": generator}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
        **order,
    )


def shard_order(
    num_samples: int,
    generator: torch.Generator | None,
    *,
    rank: int,
    world_size: int,
    even: bool = True,
) -> list[int]:
    """Process ``rank``'s indices of ``range(num_samples)``: the order in which
    ``DataLoader(shuffle=True, generator=generator)`` visits the samples (no shuffle for
    ``None``), every ``world_size``-th entry from position ``rank``, as PyTorch's
    ``DistributedSampler``. With ``even`` the tail that would give ranks unequal shards is left
    out (every rank then runs the same number of steps)."""
    if generator is None:
        order = list(range(num_samples))
    else:
        # The DataLoader draws its workers' base seed from the generator before the order
        # (tests/data/test_split.py checks that the two orders agree).
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        order = torch.randperm(num_samples, generator=generator).tolist()
    if even:
        order = order[: num_samples - num_samples % world_size]
    return order[rank::world_size]
