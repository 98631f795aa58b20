import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import autodeeplab.data
from autodeeplab.data import DATASETS, TEXTURES, TextureSegmentation, build_dataset
from autodeeplab.data.registry import register_dataset


def test_item_shapes_dtypes_and_ranges():
    ds = TextureSegmentation("train", num_samples=8, image_size=48, num_classes=4)
    assert len(ds) == 8
    assert ds.classes == TEXTURES[:4]
    assert ds.num_classes == 4 and ds.ignore_index == 255
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 48, 48) and image.dtype == torch.float32
        assert mask.shape == (48, 48) and mask.dtype == torch.int64
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert 0 <= mask.min() and mask.max() < 4


def test_default_split_sizes_and_override():
    assert [len(TextureSegmentation(s)) for s in ("train", "val", "test")] == [200, 50, 50]
    assert len(TextureSegmentation("val", num_samples=7)) == 7


def test_grayscale_textures_come_first():
    ds = TextureSegmentation("train", num_samples=30, num_classes=4)
    for i in range(len(ds)):
        image, _ = ds[i]
        # The first four textures are grayscale photos replicated to three channels.
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_most_images_contain_two_classes():
    ds = TextureSegmentation("train", num_samples=40, num_classes=8)
    two = sum(int(ds[i][1].unique().numel() >= 2) for i in range(len(ds)))
    assert two >= 38


def test_all_classes_are_used():
    ds = TextureSegmentation("train", num_samples=40, num_classes=6)
    seen = torch.cat([ds[i][1].unique() for i in range(len(ds))]).unique()
    assert seen.tolist() == list(range(6))


def test_same_item_twice_and_across_objects_and_order():
    a = TextureSegmentation("train", num_samples=10, seed=3)
    b = TextureSegmentation("train", num_samples=10, seed=3)
    forward = [a[i] for i in range(10)]
    backward = [b[i] for i in reversed(range(10))][::-1]
    for (x1, m1), (x2, m2) in zip(forward, backward):
        assert torch.equal(x1, x2) and torch.equal(m1, m2)
    x, m = a[4]
    assert torch.equal(x, forward[4][0]) and torch.equal(m, forward[4][1])


def test_item_identical_in_another_process():
    image, mask = TextureSegmentation("val", num_samples=5, seed=11)[3]
    code = (
        "import sys, torch\n"
        "from autodeeplab.data.textures import TextureSegmentation\n"
        "x, m = TextureSegmentation('val', num_samples=5, seed=11)[3]\n"
        "sys.stdout.write(f'{float(x.double().sum()):.10e} {int(m.sum())}')\n"
    )
    # The child must import this same checkout, however the test session found it.
    root = str(Path(autodeeplab.data.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.split() == [f"{float(image.double().sum()):.10e}", str(int(mask.sum()))]


def test_splits_and_seeds_differ():
    train = TextureSegmentation("train", num_samples=3)[0][0]
    val = TextureSegmentation("val", num_samples=3)[0][0]
    test = TextureSegmentation("test", num_samples=3)[0][0]
    other_seed = TextureSegmentation("train", num_samples=3, seed=1)[0][0]
    assert not torch.equal(train, val)
    assert not torch.equal(val, test)
    assert not torch.equal(train, other_seed)


@pytest.mark.parametrize("k", [1, len(TEXTURES) + 1])
def test_num_classes_bounds(k):
    with pytest.raises(ValueError, match="num_classes"):
        TextureSegmentation("train", num_classes=k)


def test_index_out_of_range():
    ds = TextureSegmentation("train", num_samples=2)
    with pytest.raises(IndexError):
        ds[2]


def test_transform_is_applied():
    ds = TextureSegmentation(
        "train", num_samples=2, transform=lambda image, mask: (image * 0 + 7, mask + 1)
    )
    image, mask = ds[0]
    assert torch.all(image == 7) and mask.min() >= 1


def test_build_dataset_passes_options():
    ds = build_dataset("textures", root=None, split="val", num_samples=4, num_classes=3)
    assert isinstance(ds, TextureSegmentation)
    assert len(ds) == 4 and ds.num_classes == 3 and ds.split == "val"


def test_a_root_given_with_the_textures_is_refused():
    # data.root=<folder> without data=<name>: the run would train on textures instead.
    message = (
        r"data.root=/data/cs is set, but data=textures .* data=<ade20k, cityscapes, folder, voc>"
    )
    with pytest.raises(ValueError, match=message):
        build_dataset("textures", root="/data/cs", split="train")


def test_build_dataset_errors():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'.*textures"):
        build_dataset("nope", split="train")
    with pytest.raises(ValueError, match=r"unknown option 'colour'.*num_classes"):
        build_dataset("textures", split="train", colour=True)
    with pytest.raises(ValueError, match=r"unknown split 'validation'"):
        build_dataset("textures", split="validation")


def test_register_duplicate_name():
    assert "textures" in DATASETS
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("textures")(lambda root, split, transform: None)
