"""``python -m autodeeplab.analysis RUN_DIR``: PNG files, never overwritten silently."""

import os
import shutil
import subprocess
import sys

import pytest
from matplotlib.image import imread

from autodeeplab.analysis.__main__ import FIGURES, main

pytestmark = pytest.mark.slow  # end-to-end runs of the command line

NAMES = sorted([*FIGURES, "compare"])


def test_command_line_writes_every_figure(smoke_dir, smoke_dir_seed1, tmp_path):
    out = tmp_path / "figures"
    command = [
        sys.executable,
        "-m",
        "autodeeplab.analysis",
        str(smoke_dir),
        "--out",
        str(out),
        "--compare",
        str(smoke_dir_seed1),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = result.stdout.split()
    assert sorted(printed) == sorted(str(out / f"{name}.png") for name in NAMES)
    assert sorted(p.stem for p in out.iterdir()) == NAMES
    for name in NAMES:
        image = imread(out / f"{name}.png")
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name


def test_default_folder_and_refusal_to_overwrite(smoke_dir, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_dir, run_dir)
    assert main([str(run_dir), "--epoch", "2"]) == 0
    out = run_dir / "analysis"
    assert sorted(p.stem for p in out.iterdir()) == sorted(FIGURES)
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([str(run_dir)]) == 2
    assert (
        "refusing to replace existing files (pass --overwrite to redraw" in capsys.readouterr().err
    )
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert main([str(run_dir), "--overwrite"]) == 0
    assert "note" not in capsys.readouterr().err
    # A comparison drawn earlier is not redrawn without --compare: the command says so.
    (out / "compare.png").write_bytes(b"an earlier comparison")
    assert main([str(run_dir), "--overwrite"]) == 0
    assert f"note: {out / 'compare.png'} is from an earlier command" in capsys.readouterr().err
    assert (out / "compare.png").read_bytes() == b"an earlier comparison"


def test_an_output_path_that_is_a_file_is_a_clear_error(smoke_dir, tmp_path, capsys):
    (tmp_path / "figs").write_text("")
    assert main([str(smoke_dir), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "figs" in err


@pytest.mark.parametrize("missing", ["arch_history.npz", "genotypes/epoch_001.json"])
def test_a_missing_file_is_a_clear_error(smoke_dir, tmp_path, capsys, missing):
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_dir, run_dir)
    (run_dir / missing).unlink()
    assert main([str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and missing.split("/")[-1] in err
    assert not (run_dir / "analysis").exists()


def test_epoch_out_of_range_is_a_clear_error(smoke_dir, tmp_path, capsys):
    assert main([str(smoke_dir), "--out", str(tmp_path), "--epoch", "9"]) == 2
    assert "epoch 9 is not recorded" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
