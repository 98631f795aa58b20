"""Cityscapes on tiny trees in the official layout (8x16 images, random label ids)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import autodeeplab.data.cityscapes  # noqa: F401  (registers "cityscapes")
from autodeeplab.data import DATASETS, build_dataset
from autodeeplab.data.base import DatasetError
from autodeeplab.data.cityscapes import CLASSES, LABELS, build_cityscapes, label_lut
from autodeeplab.data.config import DataConfig

H, W = 8, 16
CONF = Path(__file__).resolve().parents[2] / "conf" / "data" / "cityscapes.yaml"


def _write(
    root: Path,
    split: str,
    cities: dict[str, int],
    kind: str | None = "gtFine",
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``cities[city]`` image/label pairs of ``split``; returns label ids by image stem."""
    rng = np.random.default_rng(seed)
    labels = {}
    for city, count in cities.items():
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        for frame in range(count):
            stem = f"{city}_{seed:06d}_{frame:06d}"
            pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(
                root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            )
            ids = rng.integers(0, 34, (H, W), dtype=np.uint8)
            labels[f"{stem}_leftImg8bit"] = ids
            if kind is not None:
                (root / kind / split / city).mkdir(parents=True, exist_ok=True)
                Image.fromarray(ids).save(
                    root / kind / split / city / f"{stem}_{kind}_labelIds.png"
                )
    return labels


def _mask_path(root: Path, split: str, image: Path, kind: str = "gtFine") -> Path:
    stem = image.name.replace("_leftImg8bit.png", f"_{kind}_labelIds.png")
    return root / kind / split / image.parent.name / stem


@pytest.fixture
def tree(tmp_path):
    _write(tmp_path, "train", {"aachen": 2, "bochum": 1}, seed=1)
    _write(tmp_path, "val", {"frankfurt": 2}, seed=2)
    _write(tmp_path, "test", {"berlin": 1}, kind=None, seed=3)
    return tmp_path


def test_table_matches_cityscapesscripts():
    cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    assert [(l.name, l.id, l.trainId) for l in cs_labels] == list(LABELS)
    lut = label_lut()
    for label in cs_labels:
        if label.id < 0:  # the license plate: never stored in labelIds files
            continue
        expected = label.trainId if 0 <= label.trainId < 19 else 255
        assert lut[label.id] == expected, label.name
    assert [l.name for l in sorted(cs_labels, key=lambda l: l.trainId) if 0 <= l.trainId < 19] == (
        list(CLASSES)
    )
    assert len(CLASSES) == 19


def test_items_and_exact_mapping_of_every_label_id(tmp_path):
    cs_labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    _write(tmp_path, "val", {"lindau": 1})
    # Every label id 0..33 occurs (plus the stored ignore value 255).
    ids = (np.arange(H * W) % 35).astype(np.uint8).reshape(H, W)
    ids[ids == 34] = 255
    ds = build_cityscapes(tmp_path, "val")
    Image.fromarray(ids).save(ds.pairs[0][1])
    image, mask = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert mask.shape == (H, W) and mask.dtype == torch.int64
    expected = np.full((H, W), 255, dtype=np.int64)
    for label in cs_labels:
        if label.id >= 0 and 0 <= label.trainId < 19:
            expected[ids == label.id] = label.trainId
    assert np.array_equal(mask.numpy(), expected)
    assert ds.num_classes == 19 and ds.ignore_index == 255 and ds.classes == list(CLASSES)


def test_splits_sizes_and_order(tree):
    train = build_cityscapes(tree, "train")
    val = build_cityscapes(tree, "val")
    assert len(train) == 3 and len(val) == 2
    assert [p.parent.name for p, _ in train.pairs] == ["aachen", "aachen", "bochum"]
    for image, label in train.pairs:
        assert label == _mask_path(tree, "train", image)


def test_half_resolution_via_registry(tree):
    assert "cityscapes" in DATASETS
    full = build_dataset("cityscapes", root=str(tree), split="val")
    half = build_dataset("cityscapes", root=str(tree), split="val", half_resolution=True)
    image, mask = half[0]
    assert image.shape == (3, H // 2, W // 2) and mask.shape == (H // 2, W // 2)
    # Nearest-neighbour masks keep the train ids of the full-resolution mask.
    assert set(mask.unique().tolist()) <= set(full[0][1].unique().tolist())
    assert abs(float(image.mean()) - float(full[0][0].mean())) < 0.05


def test_test_split_without_labels_is_ignore(tree):
    ds = build_cityscapes(tree, "test")
    assert len(ds) == 1 and ds.pairs[0][1] is None
    image, mask = ds[0]
    assert image.shape == (3, H, W)
    assert torch.equal(mask, torch.full((H, W), 255, dtype=torch.int64))


def test_test_split_uses_dummy_labels_when_present(tmp_path):
    labels = _write(tmp_path, "test", {"berlin": 2})
    ds = build_cityscapes(tmp_path, "test")
    assert all(m is not None for _, m in ds.pairs)
    stem = ds.pairs[0][0].stem
    assert np.array_equal(ds[0][1].numpy(), label_lut()[labels[stem]])


def test_coarse_adds_train_extra_with_coarse_labels_and_keeps_val_fine(tmp_path):
    _write(tmp_path, "train", {"aachen": 2}, kind="gtFine", seed=1)
    _write(tmp_path, "train", {"aachen": 2}, kind="gtCoarse", seed=1)
    _write(tmp_path, "train_extra", {"augsburg": 3}, kind="gtCoarse", seed=2)
    _write(tmp_path, "val", {"frankfurt": 1}, kind="gtFine", seed=3)
    train = build_cityscapes(tmp_path, "train", coarse=True)
    assert len(train) == 5
    assert [p.parent.parent.name for p, _ in train.pairs] == ["train"] * 2 + ["train_extra"] * 3
    assert [m.name.split("_")[-2] for _, m in train.pairs] == ["gtFine"] * 2 + ["gtCoarse"] * 3
    val = build_cityscapes(tmp_path, "val", coarse=True)
    assert len(val) == 1 and "gtFine_labelIds" in val.pairs[0][1].name
    train[4]  # a train_extra item reads


def test_coarse_missing_names_directory(tree):
    with pytest.raises(DatasetError, match="gtCoarse") as info:
        build_cityscapes(tree, "train", coarse=True)
    assert str(tree / "gtCoarse") in str(info.value)


def test_coarse_train_extra_without_labels(tmp_path):
    _write(tmp_path, "train", {"aachen": 1}, kind="gtFine")
    _write(tmp_path, "train", {"aachen": 1}, kind="gtCoarse")
    _write(tmp_path, "train_extra", {"augsburg": 1}, kind=None)
    with pytest.raises(DatasetError) as info:
        build_cityscapes(tmp_path, "train", coarse=True)
    assert str(tmp_path / "gtCoarse" / "train_extra") in str(info.value)


def test_missing_mask_names_image(tree):
    image = sorted((tree / "leftImg8bit" / "train" / "aachen").iterdir())[1]
    mask = _mask_path(tree, "train", image)
    mask.unlink()
    with pytest.raises(DatasetError, match="no label file") as info:
        build_cityscapes(tree, "train")
    assert str(image) in str(info.value) and str(mask) in str(info.value)


def test_mask_size_mismatch_names_mask(tree):
    ds = build_cityscapes(tree, "val")
    mask = ds.pairs[1][1]
    Image.fromarray(np.zeros((H, W + 2), dtype=np.uint8)).save(mask)
    with pytest.raises(DatasetError, match="differs") as info:
        ds[1]
    assert str(mask) in str(info.value)


def test_label_outside_table_names_mask(tree):
    ds = build_cityscapes(tree, "val")
    mask = ds.pairs[0][1]
    ids = np.zeros((H, W), dtype=np.uint8)
    ids[0, 0] = 40
    Image.fromarray(ids).save(mask)
    with pytest.raises(DatasetError, match=r"\[40\]") as info:
        ds[0]
    assert str(mask) in str(info.value)


def test_unreadable_files_are_named(tree):
    ds = build_cityscapes(tree, "val")
    image, mask = ds.pairs[0]
    mask.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read") as info:
        ds[0]
    assert str(mask) in str(info.value)
    image.write_bytes(b"not a png")
    with pytest.raises(DatasetError, match="cannot read") as info:
        ds[0]
    assert str(image) in str(info.value)


def test_empty_split_names_directory(tree):
    (tree / "leftImg8bit" / "val" / "frankfurt" / "nothing_here.txt").write_text("")
    for image in (tree / "leftImg8bit" / "val" / "frankfurt").glob("*.png"):
        image.unlink()
    with pytest.raises(DatasetError, match="no <city>") as info:
        build_cityscapes(tree, "val")
    assert str(tree / "leftImg8bit" / "val") in str(info.value)


def test_missing_directories_are_named(tmp_path):
    with pytest.raises(DatasetError, match="missing directory") as info:
        build_cityscapes(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(info.value)
    with pytest.raises(DatasetError) as info:
        build_cityscapes(tmp_path, "train")
    assert str(tmp_path / "leftImg8bit") in str(info.value)
    _write(tmp_path, "train", {"aachen": 1}, kind=None)
    with pytest.raises(DatasetError) as info:
        build_cityscapes(tmp_path, "train")
    assert str(tmp_path / "gtFine" / "train") in str(info.value)
    with pytest.raises(DatasetError, match="root"):
        build_cityscapes(None, "train")


def test_config_file_matches_dataset():
    raw = OmegaConf.load(CONF)
    assert OmegaConf.is_missing(raw, "root")  # the user must say where the data is
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), raw)
    assert cfg.name == "cityscapes"
    assert cfg.num_classes == len(CLASSES)
    assert dict(cfg.options) == {"half_resolution": False, "coarse": False}


@pytest.mark.parametrize("option", ["coarse", "half_resolution"])
def test_a_string_for_a_switch_is_refused_not_taken_as_true(option):
    # On the command line data.options.coarse=no arrives as the string 'no'.
    with pytest.raises(ValueError, match=rf"data.options.{option}='no': .* expects bool"):
        build_dataset("cityscapes", root="unused", split="train", **{option: "no"})
