"""`autodeeplab.data.check`: counts, the report, and the `python -m autodeeplab.data` CLI."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import autodeeplab.data.folder  # noqa: F401  (registers "folder")
from autodeeplab.data import build_dataset
from autodeeplab.data.__main__ import CheckConfig, cli, run_check
from autodeeplab.data.base import DatasetError
from autodeeplab.data.check import check_dataset, format_report
from autodeeplab.data.config import DataConfig

# Two sizes, so the reported size range is exercised; 255 marks ignored pixels.
MASKS = {
    "train": [
        np.array([[0, 0, 1, 255], [2, 2, 2, 1], [0, 255, 255, 2]]),
        np.array([[1, 1], [1, 0]]),
    ],
    "val": [np.array([[2, 2, 2], [2, 255, 0]])],
}


def make_tree(root: Path) -> Path:
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("road\nsky\ntree\n")
    for split, masks in MASKS.items():
        for i, values in enumerate(masks):
            for folder in ("images", "masks"):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
            rgb = np.full((*values.shape, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(rgb).save(root / "images" / split / f"s{i}.png")
            mask = Image.fromarray(values.astype(np.uint8), mode="P")
            mask.putpalette(list(range(256)) * 3)
            mask.save(root / "masks" / split / f"s{i}.png")
    return root


def test_the_size_range_is_taken_per_dimension(tmp_path, monkeypatch):
    """A wide and a tall sample: the smallest height and the smallest width are of different
    samples."""
    monkeypatch.setitem(MASKS, "train", [np.zeros((2, 5), int), np.zeros((4, 3), int)])
    ds = build_dataset("folder", root=make_tree(tmp_path), split="train")
    report = check_dataset(ds, progress=False)
    assert (report["min_size"], report["max_size"]) == ((2, 3), (4, 5))


def test_counts_match_hand_counts(tmp_path):
    ds = build_dataset("folder", root=make_tree(tmp_path), split="train")
    report = check_dataset(ds, progress=False)
    # train: 12 + 4 pixels; ignored 3; class 0: 3 + 1, class 1: 2 + 3, class 2: 4 + 0.
    assert report == {
        "samples": 2,
        "total": 2,
        "pixels": 16,
        "ignored": 3,
        "class_pixels": [4, 5, 4],
        "min_size": (2, 2),
        "max_size": (3, 4),
    }
    assert check_dataset(ds, progress=False, max_samples=1)["class_pixels"] == [3, 2, 4]


class _Broken(Dataset):
    """Two samples; the second mask holds 7 with 3 classes, or a mis-sized mask."""

    num_classes, ignore_index, name = 3, 255, "broken"

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.zeros(4, 5, dtype=torch.int64)
        if i == 1 and self.fault == "value":
            mask[2, 2] = 7
        if i == 1 and self.fault == "size":
            mask = mask[:3]
        return torch.zeros(3, 4, 5), mask


def test_bad_items_of_other_datasets_are_named():
    with pytest.raises(DatasetError, match=r"broken sample 1: mask values \[7\]"):
        check_dataset(_Broken("value"), progress=False)
    with pytest.raises(DatasetError, match=r"broken sample 1: image \(3, 4, 5\) and mask \(3, 5\)"):
        check_dataset(_Broken("size"), progress=False)


def test_report_lists_counts_classes_and_ignored(tmp_path):
    root = make_tree(tmp_path)
    reports = {
        s: check_dataset(build_dataset("folder", root=root, split=s), progress=False)
        for s in ("train", "val")
    }
    text = format_report("folder", reports, ["road", "sky", "tree"])
    lines = text.splitlines()
    assert lines[0] == "dataset folder: 3 classes"
    assert lines[3].split() == ["train", "2", "2", "2x2", "..", "3x4"]
    assert lines[4].split() == ["val", "1", "1", "2x3"]
    assert [ln.split() for ln in lines if ln.split()[:2] == ["1", "sky"]] == [
        ["1", "sky", "5", "38.46%", "0", "0.00%"]
    ]
    assert [ln.split() for ln in lines if ln.split()[:1] == ["ignored"]] == [
        ["ignored", "3", "18.75%", "1", "16.67%"]
    ]
    assert "no pixels" not in text
    text = format_report("folder", {"val": reports["val"]}, ["road", "sky", "tree"])
    assert text.splitlines()[-1] == "classes with no pixels in val: sky"


def test_run_check_refuses_a_wrong_class_count(tmp_path):
    data = DataConfig(name="folder", root=str(make_tree(tmp_path)), num_classes=4)
    config = CheckConfig(data=data, progress=False)
    with pytest.raises(ValueError, match="data.num_classes=4 but .* 3 classes"):
        run_check(config)
    data.num_classes = 3
    assert "tree" in run_check(config)


def test_cli_needs_the_check_word(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["autodeeplab.data", "data=folder"])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: python -m autodeeplab.data check")


def test_cli_names_the_closest_key_for_a_misspelt_one(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["autodeeplab.data", "check", "max_sample=3"])
    with pytest.raises(SystemExit) as exit_info:
        cli()
    assert exit_info.value.code == 2
    assert "unknown config key 'max_sample' (did you mean 'max_samples'?)" in (
        capsys.readouterr().out
    )


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path / "tmp")}
    command = [sys.executable, "-m", "autodeeplab.data", "check", "progress=false", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.slow
def test_cli_prints_counts_and_writes_nothing(tmp_path):
    root = make_tree(tmp_path / "data")
    before = sorted(root.rglob("*"))
    result = _cli(tmp_path, "data=folder", f"data.root={root}", "data.num_classes=3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "dataset folder: 3 classes"
    assert lines[3].split()[:3] == ["train", "2", "2"] and lines[4].split()[:3] == ["val", "1", "1"]
    assert any(ln.split()[:3] == ["2", "tree", "4"] for ln in lines)
    assert sorted(root.rglob("*")) == before
    # Hydra's run directory (under $TMPDIR) held nothing, and is removed.
    assert not any((tmp_path / "tmp" / "autodeeplab-check").iterdir())


@pytest.mark.slow
def test_cli_refuses_an_added_key(tmp_path):
    # Hydra's own hint for a misspelt key is +key=value; the check's schema refuses that too.
    result = _cli(tmp_path, "+max_sample=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: unknown config key 'max_sample' (did you mean 'max_samples'?); known keys here: "
        "['data', 'max_samples', 'progress', 'splits']"
    )
    assert not any((tmp_path / "tmp" / "autodeeplab-check").iterdir())
    mine = tmp_path / "mine"  # a run directory named on the command line stays
    mine.mkdir()
    assert _cli(tmp_path, "max_samples=1", f"hydra.run.dir={mine}").returncode == 0
    assert mine.is_dir()


@pytest.mark.slow
def test_cli_broken_tree_exits_2_naming_the_file(tmp_path):
    root = make_tree(tmp_path / "data")
    bad = root / "masks" / "val" / "s0.png"
    Image.fromarray(np.full((2, 3), 5, dtype=np.uint8), mode="L").save(bad)
    result = _cli(tmp_path, "data=folder", f"data.root={root}", "data.num_classes=3")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {bad}: label values [5] are not classes of folder (0..2) nor the ignore value 255"
    )
    assert "Traceback" not in result.stderr
