"""Export the smoke checkpoint in both formats: parity at two sizes, the report's costs, and
the failures a parity check must catch (a tampered file, too tight a tolerance)."""

import json
import os
import signal
import subprocess
import sys
import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch.utils.flop_counter import FlopCounterMode

from autodeeplab import load_model
from autodeeplab.export import run_export
from autodeeplab.export.formats import load_runner
from autodeeplab.export.parity import ParityError, check_parity

CASES = [(1, (65, 65)), (2, (57, 73))]


@pytest.fixture(scope="module")
def exports(smoke_checkpoint, export_config):
    """Both formats of the smoke checkpoint, in the default folders (``<run>/export/<fmt>/``);
    ONNX through the TorchScript-based exporter (the dynamo one is tested in test_formats)."""
    return {
        fmt: run_export(
            export_config(
                f"checkpoint={smoke_checkpoint}", f"format={fmt}", "onnx_exporter=torchscript"
            )
        )
        for fmt in ("onnx", "torchscript")
    }


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_passes_parity_at_two_sizes(exports, smoke_checkpoint, fmt):
    folder = smoke_checkpoint.parent.parent / "export" / fmt
    report = json.loads((folder / "export.json").read_text())
    assert report == json.loads(json.dumps(exports[fmt]))
    assert (folder / report["file"]).is_file() and report["passed"]
    sizes = report["parity"]["sizes"]
    assert [(e["batch"], tuple(e["size"])) for e in sizes] == CASES
    for entry in sizes:
        assert entry["passed"] and entry["max_abs_diff"] <= 1e-4
    assert report["output"]["shape"] == ["batch", 5, "height", "width"]
    if fmt == "onnx":
        assert report["onnx"]["exporter"] == "torchscript" and report["onnx"]["opset"] == 18


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_report_holds_params_multi_adds_and_latency(exports, smoke_checkpoint, fmt):
    report = exports[fmt]
    model = load_model(smoke_checkpoint)
    assert report["params"] == sum(p.numel() for p in model.parameters())
    counter = FlopCounterMode(display=False)  # an independent count: a real forward pass
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 65, 65))
    assert report["multi_adds"] == counter.get_total_flops() // 2 > 0
    latency = report["latency"]
    assert latency["size"] == [65, 65] and latency["threads"] == 1 and latency["runs"] == 3
    runtime = {"onnx": "onnxruntime_cpu", "torchscript": "torchscript_cpu"}[fmt]
    for name in (runtime, "torch_eager_cpu"):
        assert 0 < latency[name]["median_ms"] <= latency[name]["p90_ms"]


def test_tampered_onnx_initializer_fails_parity(exports, smoke_checkpoint, tmp_path):
    source = smoke_checkpoint.parent.parent / "export" / "onnx" / "model.onnx"
    proto = onnx.load(source)
    target = next(t for t in proto.graph.initializer if t.name.endswith("classifier.bias"))
    values = numpy_helper.to_array(target).copy()
    values[0] += 1.0  # one class's logit shifts by 1 everywhere
    target.CopyFrom(numpy_helper.from_array(values, target.name))
    onnx.save(proto, tmp_path / "tampered.onnx")
    model = load_model(smoke_checkpoint)
    runner = load_runner("onnx", tmp_path / "tampered.onnx", threads=1)
    parity = check_parity(model, runner, CASES, tolerance=1e-4)
    assert not parity["passed"]
    assert all(abs(e["max_abs_diff"] - 1.0) < 1e-3 for e in parity["sizes"])


def test_tampered_torchscript_weight_fails_parity(exports, smoke_checkpoint, tmp_path):
    source = smoke_checkpoint.parent.parent / "export" / "torchscript" / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(source)
        with torch.no_grad():
            module.model.head.classifier.bias[0] += 1.0
        torch.jit.save(module, tmp_path / "tampered.pt")
    runner = load_runner("torchscript", tmp_path / "tampered.pt", threads=1)
    parity = check_parity(load_model(smoke_checkpoint), runner, CASES, tolerance=1e-4)
    assert not parity["passed"]
    assert all(abs(e["max_abs_diff"] - 1.0) < 1e-3 for e in parity["sizes"])


def test_an_existing_export_is_not_overwritten(exports, smoke_checkpoint, export_config):
    report = smoke_checkpoint.parent.parent / "export" / "onnx" / "export.json"
    before = report.read_bytes(), report.stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_export(export_config(f"checkpoint={smoke_checkpoint}"))
    assert (report.read_bytes(), report.stat().st_mtime_ns) == before


def test_a_mistyped_checkpoint_is_named_before_the_output_folder(
    exports, smoke_checkpoint, export_config
):
    # The default output folder holds an export; the checkpoint path is what is wrong.
    folder = smoke_checkpoint.parent.parent / "export" / "onnx"
    missing = smoke_checkpoint.parent / "bst.pt"
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*bst.pt does not exist"):
        run_export(export_config(f"checkpoint={missing}", f"out={folder}"))


def test_staging_folders_that_killed_exports_left_are_removed_and_others_kept(
    smoke_checkpoint, export_config, tmp_path, monkeypatch
):
    import fcntl

    import autodeeplab.export.run as export_run

    monkeypatch.setattr(export_run, "count_multi_adds", lambda model, size: 0)
    out = tmp_path / "export"
    names = {"dead": ".staging-abcd1234", "live": ".staging-efgh5678", "no lock": ".staging-mnop"}
    for name in names.values():
        (out / name).mkdir(parents=True)
        (out / name / "model.pt").write_bytes(b"partial")
    (out / names["dead"] / ".lock").write_text("")  # its process ended: nobody holds it
    held = open(out / names["live"] / ".lock", "w")  # an export in progress holds its lock
    fcntl.flock(held, fcntl.LOCK_EX)
    seen = []
    real_latency = export_run.latency_report

    def latency(*args, **kwargs):  # the staging folder of the export in progress
        seen.extend(
            (p, (p / ".lock").is_file()) for p in out.iterdir() if p.name not in names.values()
        )
        return real_latency(*args, **kwargs)

    monkeypatch.setattr(export_run, "latency_report", latency)
    settings = (f"out={out}", "format=torchscript", "latency_runs=1", "latency_warmup=0")
    try:
        run_export(export_config(f"checkpoint={smoke_checkpoint}", *settings))
    finally:
        held.close()
    left = {p.name for p in out.iterdir()}
    assert left == {"model.pt", "export.json", *names.values()} - {names["dead"]}
    ((own, locked),) = seen
    assert own.name.startswith(".staging-") and locked
    assert not own.exists()  # removed at the end


def test_a_failed_overwrite_keeps_the_earlier_export(
    smoke_checkpoint, export_config, tmp_path, monkeypatch
):
    import autodeeplab.export.run as export_run

    # Four exports: the Multi-Adds count (a few seconds each, tested elsewhere) is left out.
    monkeypatch.setattr(export_run, "count_multi_adds", lambda model, size: 0)
    out = tmp_path / "export"
    settings = (f"out={out}", "format=torchscript", "latency_runs=1", "latency_warmup=0")
    run_export(export_config(f"checkpoint={smoke_checkpoint}", *settings))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"model.pt", "export.json"}
    again = export_config(f"checkpoint={smoke_checkpoint}", *settings, "overwrite=true")

    def crash(*args, **kwargs):  # fails once the new model file is written and checked
        raise ValueError("timing failed")

    with monkeypatch.context() as patch:
        patch.setattr(export_run, "latency_report", crash)
        with pytest.raises(ValueError, match="timing failed"):
            run_export(again)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no staging left

    real_check = export_run.check_parity

    def failing(*args, **kwargs):
        parity = real_check(*args, **kwargs)
        parity["passed"] = False
        for entry in parity["sizes"]:
            entry["passed"] = False
        return parity

    with monkeypatch.context() as patch:
        patch.setattr(export_run, "check_parity", failing)
        with pytest.raises(ParityError, match="the earlier export in .* is kept"):
            run_export(again)
    failed = json.loads((out / "export.failed.json").read_text())
    assert failed["passed"] is False
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    # A complete export does replace it, and the failed attempt's report goes with it.
    run_export(again)
    assert json.loads((out / "export.json").read_text())["passed"] is True
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.pt"]

    # SIGTERM (kill, timeout, a scheduler) mid-export exits as Ctrl-C does: nothing is left
    # of the attempt and the earlier export stays.
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the export")

    with monkeypatch.context() as patch:
        patch.setattr(export_run, "latency_report", terminated)
        with pytest.raises(SystemExit) as info:
            run_export(again)
    assert info.value.code == 128 + signal.SIGTERM
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_num_classes_is_a_presets_and_refused_where_it_differs_from_the_checkpoints(
    smoke_checkpoint, export_config, tmp_path
):
    from autodeeplab.export.run import _load

    out = f"out={tmp_path / 'export'}"
    with pytest.raises(ValueError, match="num_classes=19: checkpoint .* has a head of 5 classes"):
        run_export(export_config(f"checkpoint={smoke_checkpoint}", out, "num_classes=19"))
    assert not (tmp_path / "export").exists()
    model, _, _ = _load(export_config(f"checkpoint={smoke_checkpoint}", "num_classes=5"))
    assert model.num_classes == 5
    preset, _, _ = _load(export_config("checkpoint=preset:s", "export_size=[33,33]"))
    assert preset.num_classes == 19  # unset: Cityscapes' classes


def test_an_output_path_that_is_a_file_is_refused(smoke_checkpoint, export_config, tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(NotADirectoryError, match="taken is a file; expected a folder"):
        run_export(export_config(f"checkpoint={smoke_checkpoint}", f"out={tmp_path / 'taken'}"))
    with pytest.raises(ValueError, match="data_root=.* is read by quantize=true only"):
        run_export(export_config(f"checkpoint={smoke_checkpoint}", f"data_root={tmp_path}"))


@pytest.mark.slow
def test_too_tight_a_tolerance_fails_the_command(smoke_checkpoint, tmp_path):
    out = tmp_path / "tight"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "autodeeplab.export",
            f"checkpoint={smoke_checkpoint}",
            "experiment=smoke",
            "onnx_exporter=torchscript",
            "tolerance=1e-12",
            f"out={out}",
            "threads=1",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)},  # its log folder
        cwd=tmp_path,
        timeout=300,
    )
    report = json.loads((out / "export.json").read_text())
    diffs = [e["max_abs_diff"] for e in report["parity"]["sizes"]]
    if result.returncode == 0 and max(diffs) == 0:  # a difference of 2-3 float32 steps here
        pytest.skip("ONNX Runtime matched the eager model bit for bit on this machine")
    assert result.returncode == 2, result.stderr[-2000:]
    assert "parity check failed" in result.stdout + result.stderr
    assert report["passed"] is False and report["parity"]["passed"] is False
    assert report["latency"] is None
    assert all(d < 1e-4 for d in diffs) and max(diffs) > 0 and np.isfinite(diffs).all()


def test_export_refuses_to_run_as_several_torchrun_processes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "autodeeplab.export", "checkpoint=unused.pt"],
        capture_output=True,
        text=True,
        env={**os.environ, "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "runs in one process: start it without torchrun" in result.stderr
    assert list(tmp_path.iterdir()) == []
