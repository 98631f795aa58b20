"""PASCAL VOC 2012 (and SBD train_aug) on tiny trees in the official layouts."""

from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

import autodeeplab.data.voc  # noqa: F401  (registers "voc")
from autodeeplab.data import build_dataset
from autodeeplab.data.base import DatasetError
from autodeeplab.data.config import DataConfig
from autodeeplab.data.voc import CLASSES, build_voc

H, W = 8, 16
CONF = Path(__file__).resolve().parents[2] / "conf" / "data" / "voc.yaml"
LISTS = Path("ImageSets", "Segmentation")


def _palette() -> list[int]:
    """The VOC colour map (bit-interleaved), so the labels look like the real palette PNGs."""
    colours = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours += [r, g, b]
    return colours


def _labels(seed: int) -> np.ndarray:
    """Random classes 0..20 with a few boundary (255) pixels."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 21, (H, W), dtype=np.uint8)
    arr[0, :3] = 255
    return arr


def _save_palette(path: Path, arr: np.ndarray) -> None:
    image = Image.fromarray(arr, mode="P")
    image.putpalette(_palette())
    image.save(path)


def _write_images(root: Path, ids: list[str], folder: str = "JPEGImages") -> None:
    (root / folder).mkdir(parents=True, exist_ok=True)
    for i in ids:
        pixels = np.random.default_rng(int(i.replace("_", ""))).integers(
            0, 256, (H, W, 3), dtype=np.uint8
        )
        Image.fromarray(pixels).save(root / folder / f"{i}.jpg", quality=95)


def _write_list(root: Path, name: str, lines: list[str]) -> Path:
    (root / LISTS).mkdir(parents=True, exist_ok=True)
    path = root / LISTS / name
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


TRAIN = ["2007_000032", "2007_000039"]
VAL = ["2007_000033", "2007_000042", "2007_000061"]
TEST = ["2008_000001"]


@pytest.fixture
def voc(tmp_path):
    """VOC2012 with labelled train/val and an unlabelled test image."""
    _write_images(tmp_path, TRAIN + VAL + TEST)
    (tmp_path / "SegmentationClass").mkdir()
    for n, i in enumerate(TRAIN + VAL):
        _save_palette(tmp_path / "SegmentationClass" / f"{i}.png", _labels(n))
    _write_list(tmp_path, "train.txt", TRAIN)
    _write_list(tmp_path, "val.txt", VAL)
    _write_list(tmp_path, "trainval.txt", TRAIN + VAL)
    _write_list(tmp_path, "test.txt", TEST)
    return tmp_path


def _stems(ds) -> list[str]:
    return [image.stem for image, _ in ds.pairs]


def test_items_keep_palette_indices_via_registry(voc):
    ds = build_dataset("voc", root=str(voc), split="val")
    assert len(ds) == 3 and _stems(ds) == VAL
    image, mask = ds[1]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert mask.shape == (H, W) and mask.dtype == torch.int64
    # The stored palette index is the class (not the palette colour); 255 stays the ignore value.
    assert np.array_equal(mask.numpy(), _labels(len(TRAIN) + 1).astype(np.int64))
    assert (mask == 255).sum() == 3
    assert ds.classes == list(CLASSES) and len(CLASSES) == 21 and CLASSES[0] == "background"
    assert ds.ignore_index == 255


def test_splits_and_sizes(voc):
    assert _stems(build_voc(voc, "train")) == TRAIN
    assert len(build_voc(voc, "val")) == len(VAL)
    # augmented only changes train.
    assert _stems(build_voc(voc, "val", augmented=True)) == VAL


def test_test_split_without_labels_is_ignore(voc):
    ds = build_voc(voc, "test")
    assert len(ds) == 1 and ds.pairs[0][1] is None
    assert torch.equal(ds[0][1], torch.full((H, W), 255, dtype=torch.int64))


def test_test_split_partly_labelled_is_an_error(voc):
    _write_list(voc, "test.txt", TEST + [TRAIN[0]])
    with pytest.raises(DatasetError, match="no label file") as info:
        build_voc(voc, "test")
    assert TEST[0] in str(info.value)


@pytest.mark.parametrize("line_format", ["{}", "/JPEGImages/{0}.jpg /SegmentationClassAug/{0}.png"])
def test_train_aug_from_list(voc, line_format):
    sbd_only = ["2008_000002", "2008_000003"]
    _write_images(voc, sbd_only)
    (voc / "SegmentationClassAug").mkdir()
    for n, i in enumerate(TRAIN + sbd_only):
        Image.fromarray(_labels(100 + n), mode="L").save(voc / "SegmentationClassAug" / f"{i}.png")
    # The list lacks one VOC train image: train is still the union with VOC train.
    _write_list(voc, "train_aug.txt", [line_format.format(i) for i in TRAIN[1:] + sbd_only])
    ds = build_voc(voc, "train", augmented=True)
    assert _stems(ds) == sorted(TRAIN + sbd_only)
    assert all(m.parent.name == "SegmentationClassAug" for _, m in ds.pairs)
    index = _stems(ds).index(sbd_only[1])
    assert np.array_equal(ds[index][1].numpy(), _labels(103).astype(np.int64))


def test_train_aug_list_must_exclude_val(voc):
    (voc / "SegmentationClassAug").mkdir()
    path = _write_list(voc, "train_aug.txt", TRAIN + VAL[:1])
    with pytest.raises(DatasetError, match="val.txt") as info:
        build_voc(voc, "train", augmented=True)
    assert str(path) in str(info.value)


def _write_sbd(sbd: Path, train: list[str], val: list[str]) -> dict[str, np.ndarray]:
    """SBD's benchmark_RELEASE/dataset: lists, cls/<id>.mat and img/<id>.jpg."""
    dataset = sbd / "dataset"
    (dataset / "cls").mkdir(parents=True)
    (dataset / "train.txt").write_text("\n".join(train) + "\n")
    (dataset / "val.txt").write_text("\n".join(val) + "\n")
    labels = {}
    for n, i in enumerate(train + val):
        labels[i] = _labels(200 + n)
        struct = {"Segmentation": labels[i], "Boundaries": np.zeros(1)}
        scipy.io.savemat(dataset / "cls" / f"{i}.mat", {"GTcls": struct})
    _write_images(dataset, train + val, folder="img")
    return labels


def test_train_aug_from_sbd_mat_files(voc, tmp_path_factory):
    sbd = tmp_path_factory.mktemp("sbd") / "benchmark_RELEASE"
    # SBD train holds a VOC train and a VOC val image; SBD val another VOC val image.
    sbd_labels = _write_sbd(sbd, ["2009_000001", TRAIN[0], VAL[0]], ["2009_000002", VAL[2]])
    _write_images(voc, ["2009_000001"])  # the other SBD image exists only in SBD's img/
    ds = build_dataset("voc", root=voc, split="train", augmented=True, sbd_root=str(sbd))
    # (SBD train | SBD val | VOC train) - VOC val
    assert _stems(ds) == sorted(["2009_000001", "2009_000002"] + TRAIN)
    labels = {image.stem: mask for image, mask in ds.pairs}
    assert labels[TRAIN[0]] == voc / "SegmentationClass" / f"{TRAIN[0]}.png"
    assert labels["2009_000002"] == sbd / "dataset" / "cls" / "2009_000002.mat"
    assert ds.pairs[_stems(ds).index("2009_000002")][0].parent == sbd / "dataset" / "img"
    for stem in ("2009_000001", "2009_000002"):
        mask = ds[_stems(ds).index(stem)][1]
        assert np.array_equal(mask.numpy(), sbd_labels[stem].astype(np.int64))


def test_train_aug_default_sbd_root(voc):
    _write_sbd(voc / "benchmark_RELEASE", ["2009_000001"], ["2009_000003"])
    assert len(build_voc(voc, "train", augmented=True)) == len(TRAIN) + 2


def test_train_aug_missing_names_what_is_missing(voc):
    with pytest.raises(DatasetError, match="train_aug.txt") as info:
        build_voc(voc, "train", augmented=True, sbd_root=voc / "sbd")
    message = str(info.value)
    assert str(voc / LISTS / "train_aug.txt") in message
    assert str(voc / "sbd" / "dataset" / "cls") in message


def test_bad_mat_files_are_named(voc, tmp_path_factory):
    sbd = tmp_path_factory.mktemp("sbd")
    _write_sbd(sbd, ["2009_000001", "2009_000002"], ["2009_000003"])
    cls = sbd / "dataset" / "cls"
    (cls / "2009_000001.mat").write_bytes(b"junk" * 40)
    scipy.io.savemat(cls / "2009_000002.mat", {"other": np.zeros((H, W))})
    ds = build_voc(voc, "train", augmented=True, sbd_root=sbd)
    for stem, message in [("2009_000001", "cannot read"), ("2009_000002", "GTcls")]:
        with pytest.raises(DatasetError, match=message) as info:
            ds[_stems(ds).index(stem)]
        assert str(cls / f"{stem}.mat") in str(info.value)


def test_missing_mask_names_image_and_mask(voc):
    mask = voc / "SegmentationClass" / f"{VAL[1]}.png"
    mask.unlink()
    with pytest.raises(DatasetError, match="no label file") as info:
        build_voc(voc, "val")
    assert str(voc / "JPEGImages" / f"{VAL[1]}.jpg") in str(info.value)
    assert str(mask) in str(info.value)


def test_missing_image_is_named(voc):
    image = voc / "JPEGImages" / f"{TRAIN[1]}.jpg"
    image.unlink()
    with pytest.raises(DatasetError, match="missing image") as info:
        build_voc(voc, "train")
    assert str(image) in str(info.value)


def test_mask_size_mismatch_names_mask(voc):
    mask = voc / "SegmentationClass" / f"{TRAIN[0]}.png"
    _save_palette(mask, np.zeros((H + 1, W), dtype=np.uint8))
    with pytest.raises(DatasetError, match="differs") as info:
        build_voc(voc, "train")[0]
    assert str(mask) in str(info.value)


def test_label_outside_classes_names_mask(voc):
    mask = voc / "SegmentationClass" / f"{TRAIN[0]}.png"
    arr = _labels(0)
    arr[2, 2] = 21
    _save_palette(mask, arr)
    with pytest.raises(DatasetError, match=r"\[21\]") as info:
        build_voc(voc, "train")[0]
    assert str(mask) in str(info.value)


def test_unreadable_files_are_named(voc):
    ds = build_voc(voc, "train")
    image, mask = ds.pairs[0]
    mask.write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match="cannot read") as info:
        ds[0]
    assert str(mask) in str(info.value)
    image.write_bytes(b"broken jpeg")
    with pytest.raises(DatasetError, match="cannot read") as info:
        ds[0]
    assert str(image) in str(info.value)


def test_missing_or_empty_list_and_root(voc, tmp_path_factory):
    (voc / LISTS / "val.txt").unlink()
    with pytest.raises(DatasetError, match="missing list file") as info:
        build_voc(voc, "val")
    assert str(voc / LISTS / "val.txt") in str(info.value)
    path = _write_list(voc, "train.txt", ["", "  "])
    with pytest.raises(DatasetError, match="empty") as info:
        build_voc(voc, "train")
    assert str(path) in str(info.value)
    nowhere = tmp_path_factory.mktemp("empty") / "VOC2012"
    with pytest.raises(DatasetError, match="missing directory") as info:
        build_voc(nowhere, "train")
    assert str(nowhere) in str(info.value)


def test_config_file_matches_dataset():
    raw = OmegaConf.load(CONF)
    assert OmegaConf.is_missing(raw, "root")  # the user must say where the data is
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig), raw)
    assert cfg.name == "voc"
    assert cfg.num_classes == len(CLASSES)
    assert (cfg.crop_size, cfg.scale_min, cfg.scale_max) == (513, 0.5, 2.0)
    assert cfg.options.augmented is False


def test_a_root_above_vocdevkit_is_pointed_at_the_voc2012_folder(voc, tmp_path_factory):
    parent = tmp_path_factory.mktemp("voc_parent")
    (parent / "VOCdevkit").mkdir()
    voc.rename(parent / "VOCdevkit" / "VOC2012")
    for given in (parent, parent / "VOCdevkit"):
        with pytest.raises(DatasetError, match=r"pass data.root=.*VOCdevkit/VOC2012$"):
            build_dataset("voc", root=str(given), split="train")
