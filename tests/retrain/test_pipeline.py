"""search -> retrain -> evaluate from the command line, on the smoke settings."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(*args, cwd):
    result = subprocess.run(
        [sys.executable, "-m", *args, "threads=1", "progress=false"],
        capture_output=True,
        text=True,
        env={**ENV, "TMPDIR": str(cwd)},  # evaluate's log folder goes under $TMPDIR
        cwd=cwd,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_search_then_retrain_then_evaluate(tmp_path):
    _run(
        "autodeeplab.search",
        "experiment=smoke",
        f"hydra.run.dir={tmp_path / 'search'}",
        cwd=tmp_path,
    )
    genotype = tmp_path / "search" / "genotype.json"
    _run(
        "autodeeplab.retrain",
        "experiment=smoke",
        f"genotype={genotype}",
        f"hydra.run.dir={tmp_path / 'retrain'}",
        cwd=tmp_path,
    )
    assert (tmp_path / "retrain" / ".hydra" / "config.yaml").is_file()
    checkpoint = tmp_path / "retrain" / "checkpoints" / "best.pt"
    result = _run(
        "autodeeplab.evaluate",
        "experiment=smoke",
        f"checkpoint={checkpoint}",
        "data.crop_size=48",  # a training key: no effect here, with a warning that says so
        cwd=tmp_path,
    )
    assert "miou" in result.stdout and "brick" in result.stdout  # the per-class table
    assert "data.crop_size is not read by evaluate: the training crop; sliding-window" in (
        result.stdout + result.stderr
    )
    saved = json.loads(
        (tmp_path / "retrain" / "eval_best_val_first4_ms0.75-1-1.25_flip.json").read_text()
    )
    assert 0.0 <= saved["miou"] <= 1.0


def test_cli_errors_are_one_clear_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autodeeplab.retrain",
            "experiment=smoke",
            "genotype=missing.json",
            f"hydra.run.dir={tmp_path / 'r'}",
        ],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "missing.json" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
