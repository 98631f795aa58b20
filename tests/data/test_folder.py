"""The user's-own-data "folder" dataset: pairing by stem, palette masks, classes.txt, errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import autodeeplab.data.folder
from autodeeplab.data import build_dataset
from autodeeplab.data.base import DatasetError, read_image
from autodeeplab.data.folder import read_classes

H, W = 8, 12
# Colours unrelated to the indices, so a reader returning colours instead of indices fails.
PALETTE = [200, 10, 10, 10, 200, 10, 10, 10, 200] + [77] * (3 * 253)


def _image(path: Path, seed: int = 0, size: tuple[int, int] = (H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


def _palette_mask(path: Path, values: np.ndarray) -> None:
    """A palette PNG; the full 256-entry palette keeps PIL from packing pixels into fewer
    bits (with a 3-colour palette it would store 255 as 3)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = Image.fromarray(values.astype(np.uint8), mode="P")
    mask.putpalette(PALETTE)
    mask.save(path)


def _labels(seed: int, num_classes: int = 3) -> np.ndarray:
    values = np.random.default_rng(seed).integers(0, num_classes, (H, W))
    values[0, 0] = 255
    return values


def make_folder(root: Path, splits: dict[str, list[str]] | None = None) -> Path:
    """A tiny folder dataset: classes a, b, c; stems per split; png and jpg images."""
    splits = {"train": ["a", "b", "c"], "val": ["v"]} if splits is None else splits
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("road\n\n  sky  \ntree\n")
    for split, stems in splits.items():
        for i, stem in enumerate(stems):
            suffix = ".jpg" if i % 2 else ".png"
            _image(root / "images" / split / f"{stem}{suffix}", seed=i)
            _palette_mask(root / "masks" / split / f"{stem}.png", _labels(i))
    return root


def test_items_classes_and_palette_indices(tmp_path):
    root = make_folder(tmp_path)
    ds = build_dataset("folder", root=str(root), split="train")
    assert ds.classes == ["road", "sky", "tree"] and ds.num_classes == 3
    assert len(ds) == 3 and ds.ignore_index == 255
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        assert mask.shape == (H, W) and mask.dtype == torch.int64
        assert torch.equal(mask, torch.from_numpy(_labels(i)))


def test_pairs_by_stem_whatever_the_image_suffix(tmp_path):
    root = make_folder(tmp_path, {"train": ["x1", "x2", "x3"]})
    _palette_mask(root / "masks" / "train" / "orphan.png", _labels(0))  # no image: unused
    ds = build_dataset("folder", root=root, split="train")
    assert [(i.name, m.name) for i, m in ds.pairs] == [
        ("x1.png", "x1.png"),
        ("x2.jpg", "x2.png"),
        ("x3.png", "x3.png"),
    ]


def test_grayscale_and_16_bit_masks(tmp_path):
    root = make_folder(tmp_path, {"train": ["g", "i"]})
    labels = _labels(5)
    Image.fromarray(labels.astype(np.uint8), mode="L").save(root / "masks" / "train" / "g.png")
    Image.fromarray(labels.astype(np.uint16)).save(root / "masks" / "train" / "i.png")
    ds = build_dataset("folder", root=root, split="train")
    assert torch.equal(ds[0][1], torch.from_numpy(labels))
    assert torch.equal(ds[1][1], torch.from_numpy(labels))


def test_grey_and_16_bit_grey_images_keep_their_values(tmp_path):
    root = make_folder(tmp_path, {"train": ["g", "w"]})
    grey = np.random.default_rng(1).integers(0, 256, (H, W), dtype=np.uint8)
    wide = np.random.default_rng(2).integers(0, 65536, (H, W), dtype=np.uint16)
    Image.fromarray(grey, mode="L").save(root / "images" / "train" / "g.png")
    (root / "images" / "train" / "w.jpg").unlink()
    Image.fromarray(wide).save(root / "images" / "train" / "w.png")  # opens as mode I;16
    ds = build_dataset("folder", root=root, split="train")
    for (image, _), expected in zip((ds[0], ds[1]), (grey / 255.0, wide / 65535.0)):
        assert image.shape == (3, H, W)
        for channel in image:  # grey in every channel, 16-bit values scaled, not clipped
            np.testing.assert_allclose(channel.numpy(), expected, atol=1e-6)
    # 32-bit integer images (mode I, e.g. TIFF): 16-bit values are read as such, wider refused.
    Image.fromarray(wide.astype(np.int32)).save(tmp_path / "wide.tif")
    np.testing.assert_allclose(read_image(tmp_path / "wide.tif")[1].numpy(), wide / 65535.0)
    Image.fromarray(np.full((H, W), 70000, dtype=np.int32)).save(tmp_path / "wider.tif")
    with pytest.raises(DatasetError, match=r"wider.tif: a 'I' image with values from 70000 to"):
        read_image(tmp_path / "wider.tif")


def test_an_exif_rotated_photo_is_read_upright_and_its_mask_as_stored(tmp_path):
    """Annotation tools draw on the photo as shown, turned by its EXIF orientation."""
    root = make_folder(tmp_path, {"train": ["p"]})
    stored = np.zeros((W, H, 3), dtype=np.uint8)  # a portrait photo stored on its side
    stored[:, :4] = 255  # white in the stored left columns: the top rows once turned
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 8  # shown turned 90 degrees anticlockwise
    (root / "images" / "train" / "p.png").unlink()
    photo.save(root / "images" / "train" / "p.jpg", exif=exif.tobytes(), quality=100)
    labels = np.zeros((H, W), dtype=np.int64)
    labels[H - 4 :] = 1  # drawn on the upright photo: the white band is at the bottom
    _palette_mask(root / "masks" / "train" / "p.png", labels)
    image, mask = build_dataset("folder", root=root, split="train")[0]
    assert image.shape == (3, H, W) and torch.equal(mask, torch.from_numpy(labels))
    white = image.mean(0) > 0.5
    assert torch.equal(white, mask == 1)


def test_custom_ignore_index(tmp_path):
    root = make_folder(tmp_path, {"train": ["a"]})
    labels = _labels(0)
    labels[0, 0] = 9
    _palette_mask(root / "masks" / "train" / "a.png", labels)
    ds = autodeeplab.data.folder.build_folder(root, "train", ignore_index=9)
    assert ds.ignore_index == 9 and ds[0][1][0, 0] == 9
    with pytest.raises(DatasetError, match=r"a\.png: label values \[9\]"):
        build_dataset("folder", root=root, split="train")[0]
    with pytest.raises(DatasetError, match="ignore_index=2 is a class index"):
        build_dataset("folder", root=root, split="train", ignore_index=2)


def test_an_ignore_index_above_255_in_16_bit_masks(tmp_path):
    root = make_folder(tmp_path, {"train": ["a"]})
    labels = _labels(0).astype(np.uint16)
    labels[0, 0] = labels[1, 1] = 256
    Image.fromarray(labels).save(root / "masks" / "train" / "a.png")
    ds = autodeeplab.data.folder.build_folder(root, "train", ignore_index=256)
    assert torch.equal(ds[0][1], torch.from_numpy(labels.astype(np.int64)))


def test_classes_file_errors(tmp_path):
    root = make_folder(tmp_path)
    (root / "classes.txt").unlink()
    with pytest.raises(DatasetError, match=r"classes\.txt: missing class list"):
        build_dataset("folder", root=root, split="train")
    (root / "classes.txt").write_text("\n  \n")
    with pytest.raises(DatasetError, match=r"classes\.txt: the class list is empty"):
        build_dataset("folder", root=root, split="train")
    (root / "classes.txt").write_text("a\nb\na\n")
    with pytest.raises(DatasetError, match=r"classes\.txt: class names listed more than once"):
        read_classes(root / "classes.txt")


def test_missing_root_split_and_mask_folders(tmp_path):
    with pytest.raises(DatasetError, match="data.root is not set"):
        build_dataset("folder", root=None, split="train")
    root = make_folder(tmp_path)
    with pytest.raises(DatasetError, match=f"{root / 'images' / 'test'}: missing directory"):
        build_dataset("folder", root=root, split="test")
    (root / "images" / "test").mkdir()
    with pytest.raises(DatasetError, match=f"{root / 'images' / 'test'}: no images"):
        build_dataset("folder", root=root, split="test")
    for mask in (root / "masks" / "val").iterdir():
        mask.unlink()
    (root / "masks" / "val").rmdir()
    with pytest.raises(DatasetError, match=f"{root / 'masks' / 'val'}: missing directory"):
        build_dataset("folder", root=root, split="val")  # only test may lack labels


def test_a_test_split_without_masks_is_all_ignore(tmp_path):
    root = make_folder(tmp_path, {"train": ["a"], "test": []})
    _image(root / "images" / "test" / "t.png", size=(5, 7))
    ds = build_dataset("folder", root=root, split="test", ignore_index=254)
    image, mask = ds[0]
    assert image.shape == (3, 5, 7)
    assert torch.equal(mask, torch.full((5, 7), 254))


def test_missing_mask_and_duplicate_stem_name_the_image(tmp_path):
    root = make_folder(tmp_path)
    (root / "masks" / "train" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"b\.jpg: no label file .*b\.png"):
        build_dataset("folder", root=root, split="train")
    root = make_folder(tmp_path / "dup")
    _image(root / "images" / "train" / "a.jpg")
    with pytest.raises(DatasetError, match=r"a\.png: same name as a\.jpg"):
        build_dataset("folder", root=root, split="train")


def test_bad_files_name_the_file(tmp_path):
    root = make_folder(tmp_path)
    labels = _labels(0)
    labels[1, 1] = 3  # one past the last class
    _palette_mask(root / "masks" / "train" / "a.png", labels)
    _palette_mask(root / "masks" / "train" / "b.png", np.zeros((H + 1, W)))
    (root / "masks" / "train" / "c.png").write_bytes(b"\x89PNG broken")
    ds = build_dataset("folder", root=root, split="train")
    with pytest.raises(DatasetError, match=r"a\.png: label values \[3\] are not classes"):
        ds[0]
    with pytest.raises(
        DatasetError, match=r"b\.png: label size \(HxW\) 9x12 differs .*b\.jpg \(8x12\)"
    ):
        ds[1]
    with pytest.raises(DatasetError, match=r"c\.png: cannot read label file"):
        ds[2]


def test_unknown_option_is_refused(tmp_path):
    root = make_folder(tmp_path)
    with pytest.raises(ValueError, match="unknown option 'num_classes'"):
        build_dataset("folder", root=root, split="train", num_classes=3)


def test_scaled_masks_take_the_label_under_each_pixels_centre(tmp_path):
    # Class 1 from column 5 of 16; at scale 1/4 output pixel j covers source columns 4j..4j+3
    # and samples them around 4j + 1.5: pixel 1 (columns 4-7) is mostly class 1.
    (tmp_path / "classes.txt").write_text("dark\nbright\n")
    labels = np.zeros((16, 16), np.uint8)
    labels[:, 5:] = 1
    (tmp_path / "images" / "train").mkdir(parents=True)
    Image.fromarray(np.repeat(labels[:, :, None] * 255, 3, 2)).save(
        tmp_path / "images" / "train" / "a.png"
    )
    _palette_mask(tmp_path / "masks" / "train" / "a.png", labels)
    image, mask = build_dataset("folder", root=tmp_path, split="train", scale=0.25)[0]
    assert mask.shape == (4, 4) and mask[0].tolist() == [0, 1, 1, 1]
    assert image[0, 0].tolist()[1] > 0.5  # the image agrees: pixel 1 is mostly bright
