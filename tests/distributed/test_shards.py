"""What each rank reads: disjoint, equal shards whose batches together are the batches of one
process with the global batch (pure functions of rank and world size, no processes needed)."""

import pytest
import torch
from torch.utils.data import Dataset

from autodeeplab.data.split import SeededSubset, epoch_loader, shard_order
from autodeeplab.retrain.loop import epoch_batches


class _Indices(Dataset):
    """Item ``i`` is ``(image filled with i, mask filled with i)``."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return torch.full((3, 2, 2), float(i)), torch.full((2, 2), i, dtype=torch.int64)


def _batches(loader) -> list[list[int]]:
    return [target[:, 0, 0].tolist() for _, target in loader]


@pytest.mark.parametrize("n, world, batch", [(18, 2, 2), (23, 3, 2), (16, 4, 1)])
def test_rank_batches_together_are_the_single_process_batches(n, world, batch):
    kwargs = dict(shuffle=True, seed=5, epoch=3)
    single = _batches(epoch_loader(_Indices(n), world * batch, **kwargs))
    ranks = [
        _batches(epoch_loader(_Indices(n), batch, rank=r, world_size=world, **kwargs))
        for r in range(world)
    ]
    assert all(len(r) == len(single) for r in ranks)  # every rank runs the same steps
    for i, expected in enumerate(single):
        together = [x for r in ranks for x in r[i]]
        assert sorted(together) == sorted(expected)
    flat = [x for r in ranks for b in r for x in b]
    assert len(flat) == len(set(flat))  # disjoint


def test_held_out_shards_cover_every_sample_once():
    ranks = [
        _batches(
            epoch_loader(
                _Indices(7),
                2,
                shuffle=False,
                seed=0,
                epoch=0,
                drop_last=False,
                rank=r,
                world_size=3,
            )
        )
        for r in range(3)
    ]
    assert sorted(x for r in ranks for b in r for x in b) == list(range(7))


def test_shards_need_a_full_batch_per_process():
    with pytest.raises(ValueError, match="over 2 processes"):
        epoch_loader(_Indices(5), 3, shuffle=True, seed=0, epoch=0, rank=0, world_size=2)
    assert shard_order(5, None, rank=1, world_size=2) == [1, 3]
    assert shard_order(5, None, rank=1, world_size=2, even=False) == [1, 3]
    assert shard_order(5, None, rank=0, world_size=2, even=False) == [0, 2, 4]


def test_retrain_shards_resume_mid_epoch():
    data = SeededSubset(_Indices(21), range(21), None, seed=0)
    kwargs = dict(seed=2, epoch=1, num_workers=0, ignore_index=255, pin_memory=False)
    single = _batches(epoch_batches(data, 4, skip=0, **kwargs))
    ranks = [
        _batches(epoch_batches(data, 2, skip=0, rank=r, world_size=2, **kwargs)) for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) == len(single) == 5
    for i, expected in enumerate(single):
        assert sorted(ranks[0][i] + ranks[1][i]) == sorted(expected)
    later = _batches(epoch_batches(data, 2, skip=3, rank=1, world_size=2, **kwargs))
    assert later == ranks[1][3:]
