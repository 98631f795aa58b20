"""Atomic writes: a write that fails midway leaves the previous file as it was."""

import os
import stat

import pytest

from autodeeplab.files import atomic_write, atomic_write_text


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    atomic_write_text(path, "epoch 1")

    def torn(handle):
        handle.write(b"epoch 2, half")
        handle.flush()
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, torn)
    assert path.read_text() == "epoch 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    def torn(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "sub" / "new.json", torn)
    assert list((tmp_path / "sub").iterdir()) == []


def test_a_complete_write_replaces_the_file_with_the_usual_permissions(tmp_path):
    path = tmp_path / "genotype.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genotype.json"]
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
