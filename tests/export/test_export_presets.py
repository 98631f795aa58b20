"""``checkpoint=preset:<name>``: a preset with random weights, for latency studies."""

from pathlib import Path

import pytest
import torch

from autodeeplab.export import ExportConfig, run_export
from autodeeplab.export.run import calibrate_batch_norm, export_dir, preset_name
from autodeeplab.models import PRESETS


def test_preset_names_and_default_folders(export_config):
    assert preset_name("preset:s") == preset_name("preset:auto_deeplab_s") == "auto_deeplab_s"
    assert preset_name("runs/retrain/x/checkpoints/best.pt") is None
    cfg = export_config("checkpoint=preset:l", "format=torchscript")
    assert export_dir(cfg) == Path("exports/auto_deeplab_l/torchscript")
    cfg = export_config("checkpoint=runs/retrain/x/checkpoints/best.pt")
    assert export_dir(cfg) == Path("runs/retrain/x/export/onnx")
    with pytest.raises(ValueError, match="unknown preset"):
        preset_name("preset:xl")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["quantize=true"], "no dataset"),
        (["quantize=true", "format=torchscript"], "format=onnx"),
        (["format=tflite"], "format="),
        (["export_size=[65]"], "export_size"),
        (["threads=0"], "threads=0; expected a positive number"),
        (["opset=12"], "opset=12: onnx_exporter=dynamo writes opset 18 or later"),
        (["opset=7", "onnx_exporter=torchscript"], "opset=7: the model.s bilinear resizing"),
    ],
)
def test_bad_requests_are_refused_before_any_work(export_config, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_export(export_config("checkpoint=preset:s", f"out={tmp_path}", *overrides))
    assert not any(tmp_path.iterdir())


def test_preset_s_exports_with_random_weights(export_config, tmp_path):
    sizes = ["export_size=[33,33]", "check_size=[35,41]", "latency_size=[33,33]"]
    cfg = export_config(
        "checkpoint=preset:s", f"out={tmp_path}", "onnx_exporter=torchscript", *sizes
    )
    report = run_export(cfg)
    assert report["passed"] and (tmp_path / "model.onnx").is_file()
    assert report["source"] == {"preset": "auto_deeplab_s", "weights": "random", "seed": 0}
    assert report["output"]["shape"] == ["batch", 19, "height", "width"]
    params = sum(p.numel() for p in PRESETS["s"](num_classes=19).parameters())
    assert report["params"] == params and abs(params - 10.15e6) < 0.01e6  # [P Table 2]
    assert report["latency"]["onnxruntime_cpu"]["median_ms"] > 0


def test_a_preset_sees_its_input_so_parity_means_something():
    # Random weights with the initial BatchNorm statistics hardly depend on the image (the
    # logits are the classifier's bias); calibrated, a new image moves them far beyond the
    # parity tolerance, so an export that ignored the image would fail.
    torch.manual_seed(0)
    model = PRESETS["s"](num_classes=19).eval()
    x, y = torch.randn(1, 3, 33, 33), torch.randn(1, 3, 33, 33)
    with torch.no_grad():
        plain = (model(x)["out"] - model(y)["out"]).abs().max().item()
        calibrate_batch_norm(model, (33, 33))
        assert not model.training
        out = model(x)["out"]
        moved = (out - model(y)["out"]).abs().max().item()
    tolerance = ExportConfig().tolerance
    assert plain < tolerance < 100 * tolerance * max(1.0, out.abs().max().item()) < moved
