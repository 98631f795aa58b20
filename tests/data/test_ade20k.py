"""ADE20K (SceneParsing layout): split folders, the 0 -> ignore / k -> k-1 label shift, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autodeeplab.data.ade20k
from autodeeplab.data import build_dataset
from autodeeplab.data.ade20k import ADE20K_CLASSES, ade20k_lut
from autodeeplab.data.base import DatasetError

H, W = 8, 12


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=95)


def _mask(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def _labels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 151, (H, W))


def make_ade(root: Path, train: int = 3, val: int = 2, test: int = 0) -> Path:
    """A tiny ADEChallengeData2016 tree with random labels 0..150."""
    for split, folder, count in (("train", "training", train), ("val", "validation", val)):
        for i in range(count):
            stem = f"ADE_{split}_{i:08d}"
            _image(root / "images" / folder / f"{stem}.jpg", seed=i)
            _mask(root / "annotations" / folder / f"{stem}.png", _labels(i))
    for i in range(test):
        _image(root / "images" / "testing" / f"ADE_test_{i:08d}.jpg", seed=100 + i)
    return root


def test_class_list_is_the_150_sceneparsing_names():
    assert len(ADE20K_CLASSES) == 150 == len(set(ADE20K_CLASSES))
    assert ADE20K_CLASSES[:3] == ("wall", "building", "sky")
    assert ADE20K_CLASSES[44] == "chest of drawers"
    assert ADE20K_CLASSES[-3:] == ("glass", "clock", "flag")


def test_items_shapes_dtypes_and_exact_label_shift(tmp_path):
    root = make_ade(tmp_path)
    stored = np.arange(H * W).reshape(H, W) % 151
    stored[0, :4] = [0, 1, 2, 150]
    _mask(root / "annotations" / "training" / "ADE_train_00000000.png", stored)
    ds = build_dataset("ade20k", root=str(root), split="train")
    assert len(ds) == 3 and ds.num_classes == 150 and ds.ignore_index == 255
    assert ds.classes == list(ADE20K_CLASSES)
    image, mask = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.shape == (H, W) and mask.dtype == torch.int64
    assert mask[0, :4].tolist() == [255, 0, 1, 149]
    expected = np.where(stored == 0, 255, stored - 1)
    assert torch.equal(mask, torch.from_numpy(expected))


def test_lut_maps_every_stored_value():
    lut = ade20k_lut()
    assert lut[0] == 255 and lut[1] == 0 and lut[150] == 149
    assert (lut[151:] == -1).all()
    assert ade20k_lut(200)[0] == 200


def test_split_names_map_to_release_folders(tmp_path):
    root = make_ade(tmp_path, train=3, val=2)
    train = build_dataset("ade20k", root=root, split="train")
    val = build_dataset("ade20k", root=root, split="val")
    assert len(train) == 3 and len(val) == 2
    assert all(
        p[0].parent.name == "training" and p[1].parent.name == "training" for p in train.pairs
    )
    assert all(p[0].parent.name == "validation" for p in val.pairs)
    assert [p[0].stem for p in val.pairs] == [p[1].stem for p in val.pairs]


def test_test_split_is_unlabelled_when_present(tmp_path):
    root = make_ade(tmp_path, test=2)
    test = build_dataset("ade20k", root=root, split="test")
    assert len(test) == 2
    image, mask = test[1]
    assert image.shape == (3, H, W) and (mask == 255).all()


def test_missing_test_split_names_the_folder_and_the_download(tmp_path):
    root = make_ade(tmp_path / "ADEChallengeData2016")
    with pytest.raises(DatasetError, match=r"images/testing: missing directory .*release_test.zip"):
        build_dataset("ade20k", root=root, split="test")


@pytest.mark.parametrize("where", ["beside", "inside"])
def test_test_split_reads_the_separate_download_where_it_unpacks(tmp_path, where):
    root = make_ade(tmp_path / "ADEChallengeData2016")
    release = (tmp_path if where == "beside" else root) / "release_test" / "testing"
    for i in range(3):
        _image(release / f"ADE_test_{i:08d}.jpg", seed=100 + i)
    test = build_dataset("ade20k", root=root, split="test")
    assert [p.parent for p, _ in test.pairs] == [release] * 3
    assert (test[0][1] == 255).all()


def test_scale_and_transform(tmp_path):
    root = make_ade(tmp_path)
    ds = build_dataset("ade20k", root=root, split="train", scale=0.5)
    assert ds[0][0].shape == (3, H // 2, W // 2) and ds[0][1].shape == (H // 2, W // 2)
    flip = autodeeplab.data.ade20k.build_ade20k(
        root, "train", lambda im, m: (im.flip(-1), m.flip(-1))
    )
    plain = build_dataset("ade20k", root=root, split="train")
    assert torch.equal(flip[1][1], plain[1][1].flip(-1))


def test_missing_root_and_folders(tmp_path):
    with pytest.raises(DatasetError, match="data.root is not set"):
        build_dataset("ade20k", root=None, split="train")
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'}: missing directory"):
        build_dataset("ade20k", root=tmp_path / "nope", split="train")
    make_ade(tmp_path, val=0)
    with pytest.raises(DatasetError, match=r"images/validation: missing directory"):
        build_dataset("ade20k", root=tmp_path, split="val")


def test_empty_split_names_the_folder(tmp_path):
    root = make_ade(tmp_path, val=0)
    (root / "images" / "validation").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"images/validation: no images"):
        build_dataset("ade20k", root=root, split="val")


def test_missing_label_file_names_the_image(tmp_path):
    root = make_ade(tmp_path)
    (root / "annotations" / "training" / "ADE_train_00000001.png").unlink()
    with pytest.raises(DatasetError, match=r"ADE_train_00000001\.jpg: no label file"):
        build_dataset("ade20k", root=root, split="train")


@pytest.mark.parametrize("bad", [151, 255])
def test_label_outside_the_classes_names_the_file(tmp_path, bad):
    root = make_ade(tmp_path)
    stored = _labels(0)
    stored[3, 3] = bad
    _mask(root / "annotations" / "training" / "ADE_train_00000002.png", stored)
    ds = build_dataset("ade20k", root=root, split="train")
    with pytest.raises(DatasetError, match=rf"ADE_train_00000002\.png: label values \[{bad}\]"):
        ds[2]


def test_size_mismatch_and_unreadable_files_name_the_file(tmp_path):
    root = make_ade(tmp_path)
    _image(root / "images" / "training" / "ADE_train_00000000.jpg", size=(H, W + 1))
    (root / "images" / "training" / "ADE_train_00000001.jpg").write_bytes(b"not a jpeg")
    rgb = root / "annotations" / "training" / "ADE_train_00000002.png"
    Image.new("RGB", (W, H)).save(rgb)
    ds = build_dataset("ade20k", root=root, split="train")
    with pytest.raises(
        DatasetError, match=r"ADE_train_00000000\.png: label size \(HxW\) 8x12 differs"
    ):
        ds[0]
    with pytest.raises(DatasetError, match=r"ADE_train_00000001\.jpg: cannot read image"):
        ds[1]
    with pytest.raises(DatasetError, match=r"ADE_train_00000002\.png: label image has mode 'RGB'"):
        ds[2]


def test_ignore_index_must_not_be_a_class(tmp_path):
    root = make_ade(tmp_path)
    with pytest.raises(DatasetError, match="ignore_index=149"):
        build_dataset("ade20k", root=root, split="train", ignore_index=149)
    mask = build_dataset("ade20k", root=root, split="train", ignore_index=200)[0][1]
    assert set(mask.unique().tolist()) <= set(range(150)) | {200}


def test_a_root_above_the_release_folder_is_pointed_at_it(tmp_path):
    make_ade(tmp_path / "ADEChallengeData2016")
    with pytest.raises(DatasetError, match=r"pass data.root=.*ADEChallengeData2016$"):
        build_dataset("ade20k", root=tmp_path, split="train")
