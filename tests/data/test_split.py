import json

import pytest
import torch
from torch.utils.data import Dataset

from autodeeplab.data.split import (
    SeededSubset,
    epoch_loader,
    load_split,
    save_split,
    search_split,
)
from autodeeplab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip


class _Toy(Dataset):
    """Items are (image filled with the index, mask of the index); 12 x 12 pixels."""

    num_classes = 3
    ignore_index = 255

    def __init__(self, n: int = 20) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        image = torch.arange(3 * 12 * 12, dtype=torch.float32).view(3, 12, 12) + 1000 * i
        return image, torch.full((12, 12), i, dtype=torch.int64)


_AUG = Compose([RandomCrop(6), RandomHorizontalFlip()])


@pytest.mark.parametrize("n", [2, 9, 10])
def test_search_split_disjoint_complete_sorted(n):
    a, b = search_split(n, seed=0)
    assert set(a).isdisjoint(b)
    assert sorted(a + b) == list(range(n))
    assert a == sorted(a) and b == sorted(b)
    assert len(a) == (n + 1) // 2


def test_search_split_is_seeded():
    assert search_split(50, 1) == search_split(50, 1)
    assert search_split(50, 1) != search_split(50, 2)


def test_search_split_too_small():
    with pytest.raises(ValueError, match="num_samples"):
        search_split(1, 0)


def test_save_load_round_trip(tmp_path):
    a, b = search_split(11, 3)
    path = tmp_path / "sub" / "split.json"
    save_split(path, a, b, seed=3, dataset="textures")
    assert load_split(path) == (a, b)
    payload = json.loads(path.read_text())
    assert payload == {"seed": 3, "dataset": "textures", "A": a, "B": b}
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]


def test_save_rejects_overlap(tmp_path):
    with pytest.raises(ValueError, match="overlap"):
        save_split(tmp_path / "s.json", [0, 1], [1, 2], seed=0, dataset="x")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"seed": 0, "dataset": "x", "A": [0]}', "missing keys"),
        ('{"seed": 0, "dataset": "x", "A": [0, 1], "B": [1, 2]}', "overlap"),
        ('{"seed": 0, "dataset": "x", "A": [0, "a"], "B": [2]}', "non-index"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_load_malformed_split_names_file(tmp_path, content, message):
    path = tmp_path / "bad_split.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_split(path)
    assert "bad_split.json" in str(info.value)


def _epoch_items(subset, epoch):
    subset.set_epoch(epoch)
    return [subset[i] for i in range(len(subset))]


def _same(xs, ys):
    return all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(xs, ys))


def test_seeded_subset_reproducible_across_epoch_reset():
    subset = SeededSubset(_Toy(), [3, 5, 7, 11], _AUG, seed=4)
    first = _epoch_items(subset, 0)
    second = _epoch_items(subset, 1)
    again = _epoch_items(subset, 0)
    assert _same(first, again)
    assert not _same(first, second)
    fresh = SeededSubset(_Toy(), [3, 5, 7, 11], _AUG, seed=4)
    assert _same(first, _epoch_items(fresh, 0))
    other_seed = SeededSubset(_Toy(), [3, 5, 7, 11], _AUG, seed=5)
    assert not _same(first, _epoch_items(other_seed, 0))


def test_seeded_subset_depends_on_dataset_index_not_position():
    a = SeededSubset(_Toy(), [3, 5], _AUG, seed=0)
    b = SeededSubset(_Toy(), [5, 3], _AUG, seed=0)
    assert _same([a[0], a[1]], [b[1], b[0]])


def test_seeded_subset_maps_indices_and_metadata():
    subset = SeededSubset(_Toy(), [4, 2], None, seed=0)
    assert len(subset) == 2
    assert int(subset[0][1][0, 0]) == 4 and int(subset[1][1][0, 0]) == 2
    assert subset.num_classes == 3 and subset.ignore_index == 255
    with pytest.raises(ValueError, match="out of range"):
        SeededSubset(_Toy(5), [1, 5], None, seed=0)


def _order(loader):
    """Dataset indices in the order the loader yields them (the toy mask holds the index)."""
    return [int(v) for _, m in loader for v in m[:, 0, 0]]


def test_epoch_loader_order_depends_only_on_seed_and_epoch():
    ds = _Toy(16)
    # Drawing from the global RNG in between must not change the order.
    first = _order(epoch_loader(ds, 4, shuffle=True, seed=1, epoch=2))
    torch.rand(100)
    assert first == _order(epoch_loader(ds, 4, shuffle=True, seed=1, epoch=2))
    assert sorted(first) == list(range(16))
    assert first != _order(epoch_loader(ds, 4, shuffle=True, seed=1, epoch=3))
    assert first != _order(epoch_loader(ds, 4, shuffle=True, seed=2, epoch=2))
    assert _order(epoch_loader(ds, 4, shuffle=False, seed=1, epoch=2)) == list(range(16))


def test_epoch_loader_sets_epoch_and_drops_last():
    subset = SeededSubset(_Toy(10), list(range(10)), _AUG, seed=0)
    loader = epoch_loader(subset, 4, shuffle=True, seed=0, epoch=5)
    assert subset.epoch == 5
    assert [len(m) for _, m in loader] == [4, 4]
    with pytest.raises(ValueError, match="batch_size"):
        epoch_loader(_Toy(3), 4, shuffle=True, seed=0, epoch=0)


def test_epoch_loader_batches_identical_with_workers():
    def batches(num_workers):
        subset = SeededSubset(_Toy(12), list(range(12)), _AUG, seed=9)
        loader = epoch_loader(subset, 3, shuffle=True, seed=9, epoch=1, num_workers=num_workers)
        return list(loader)

    for (x0, m0), (x2, m2) in zip(batches(0), batches(2)):
        assert torch.equal(x0, x2) and torch.equal(m0, m2)


def test_pad_collate_pads_images_with_zero_and_masks_with_ignore():
    from autodeeplab.data.split import pad_collate

    a = (torch.ones(3, 2, 3), torch.zeros(2, 3, dtype=torch.int64))
    b = (torch.ones(3, 4, 2), torch.ones(4, 2, dtype=torch.int64))
    images, masks = pad_collate([a, b], ignore_index=7)
    assert images.shape == (2, 3, 4, 3) and masks.shape == (2, 4, 3)
    assert images[0, :, 2:].abs().sum() == 0 and images[1, :, :, 2:].abs().sum() == 0
    assert (masks[0, 2:] == 7).all() and (masks[1, :, 2:] == 7).all()
    assert (masks[0, :2, :3] == 0).all() and (masks[1, :4, :2] == 1).all()
