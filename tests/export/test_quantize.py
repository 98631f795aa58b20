"""Int8 post-training quantization of the smoke checkpoint's ONNX model."""

import logging

import pytest
import torch

from autodeeplab.data.base import DatasetError
from autodeeplab.export import run_export
from autodeeplab.export.quantize import _per_tensor_fallbacks, fit_to_size, quantize_onnx


def test_fit_to_size_keeps_the_aspect_and_crops_the_centre():
    image = torch.arange(2 * 4, dtype=torch.float32).view(1, 2, 4).expand(3, 2, 4)
    mask = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    fitted, fitted_mask = fit_to_size(image, mask, (4, 4))  # scale 2 -> 4x8, centre 4 columns
    assert fitted.shape == (3, 4, 4) and fitted_mask.shape == (4, 4)
    assert fitted_mask.tolist() == [[1, 1, 2, 2]] * 4


def test_onnx_runtimes_per_tensor_fallback_warnings_are_collected_not_shown(caplog):
    with caplog.at_level(logging.WARNING), _per_tensor_fallbacks() as names:
        for name in ("cells.5.ops.0.0.bn.weight", "cells.7.ops.1.0.bn.weight"):
            logging.warning(f"Axis 1 is out-of-range for weight '{name}' with rank 1")
        logging.warning("Another warning")
        # A malformed call passes the filter to logging's own error handling, unraised.
        malformed = logging.makeLogRecord({"msg": "a malformed call %d", "args": ("x",)})
        assert logging.getLogger().filter(malformed)
    logging.warning("Axis 1 is out-of-range for weight 'after' with rank 1")
    assert names == ["cells.5.ops.0.0.bn.weight", "cells.7.ops.1.0.bn.weight"]
    assert caplog.messages == [
        "Another warning",
        "Axis 1 is out-of-range for weight 'after' with rank 1",  # the filter is gone
    ]


def test_a_batchnorm_left_unfolded_is_quantized_per_tensor_and_reported_once(tmp_path, caplog):
    # A BatchNorm after a pool has no conv to fold into: ONNX Runtime quantizes its 1-D scale
    # per tensor, warning once per weight on its root logger; the export reports it once.
    import numpy as np
    from torch import nn

    from autodeeplab.export.formats import INPUT_NAME

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 1, 1), nn.BatchNorm2d(4))
    net = nn.Sequential(*net, nn.Conv2d(4, 2, 1)).eval()
    source = tmp_path / "model.onnx"
    torch.onnx.export(net, torch.randn(1, 3, 8, 8), source, input_names=[INPUT_NAME], dynamo=False)
    images = [np.random.default_rng(i).normal(size=(1, 3, 8, 8)).astype("float32") for i in (0, 1)]
    with caplog.at_level(logging.INFO):
        names = quantize_onnx(source, tmp_path / "int8.onnx", images)
    assert names == ["2.weight"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "int8: 1 one-dimensional weight(s) quantized per tensor" in caplog.text


@pytest.mark.slow
def test_quantize_records_miou_before_and_after(smoke_checkpoint, export_config, tmp_path):
    cfg = export_config(
        f"checkpoint={smoke_checkpoint}",
        f"out={tmp_path}",
        "onnx_exporter=torchscript",
        "quantize=true",
    )
    report = run_export(cfg)["quantization"]
    assert (tmp_path / report["file"]).is_file()
    assert (report["calibration_samples"], report["val_samples"]) == (2, 2)
    assert report["data"] == {"name": "textures", "root": None} and report["size"] == [65, 65]
    # Each weight quantized per tensor is a one-dimensional weight of the float model.
    import onnx

    float_model = onnx.load(tmp_path / "model.onnx")
    ranks = {t.name: len(t.dims) for t in float_model.graph.initializer}
    assert all(ranks[name] == 1 for name in report["per_tensor_weights"])
    for key in ("miou_float32", "miou_int8"):
        assert 0.0 <= report[key] <= 1.0
    assert report["onnxruntime_cpu_int8"]["median_ms"] > 0 and report["speedup_median"] > 0


def test_quantize_checks_its_data_before_exporting_and_follows_moved_data(
    smoke_checkpoint, export_config, tmp_path, monkeypatch
):
    import autodeeplab.export.run as export_run

    exported = []
    monkeypatch.setattr(export_run, "_export", lambda *args: exported.append(args) or {})
    missing = tmp_path / "moved"
    # The smoke checkpoint's data (textures) is generated, so give it a folder dataset's root
    # that does not exist, as a moved dataset would.
    from autodeeplab.engine.checkpoint import load_checkpoint, save_checkpoint

    state = load_checkpoint(smoke_checkpoint)
    state["config"]["data"].update(name="folder", root=str(missing), num_classes=5, options={})
    moved = tmp_path / "moved_data.pt"
    save_checkpoint(state, moved)
    cfg = export_config(f"checkpoint={moved}", f"out={tmp_path / 'a'}", "quantize=true")
    with pytest.raises(DatasetError, match=r"moved: missing directory .* pass data_root="):
        run_export(cfg)
    assert exported == [] and not (tmp_path / "a").exists()
    # data_root points it at the data's new place.
    import numpy as np
    from PIL import Image

    moved_to = tmp_path / "new_place"
    (moved_to / "classes.txt").parent.mkdir()
    (moved_to / "classes.txt").write_text("".join(f"c{i}\n" for i in range(5)))
    for split in ("train", "val"):
        for folder in ("images", "masks"):
            (moved_to / folder / split).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(moved_to / "images" / split / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(moved_to / "masks" / split / "a.png")
    cfg = export_config(
        f"checkpoint={moved}", f"out={tmp_path / 'b'}", "quantize=true", f"data_root={moved_to}"
    )
    run_export(cfg)
    assert len(exported) == 1
    # The embedded textures read no files: a data_root for them is a mistake, named.
    cfg = export_config(
        f"checkpoint={smoke_checkpoint}", f"out={tmp_path / 'c'}", "quantize=true",
        f"data_root={moved_to}",
    )  # fmt: skip
    message = r"data_root=.*new_place: checkpoint .* trained on data=textures, which is generated"
    with pytest.raises(ValueError, match=message + " in memory; leave data_root unset"):
        run_export(cfg)
    assert len(exported) == 1 and not (tmp_path / "c").exists()
    # A textures root stored (and ignored) by an earlier version is dropped, not refused.
    state = load_checkpoint(smoke_checkpoint)
    state["config"]["data"]["root"] = "/old/ignored"
    stored = tmp_path / "stored_root.pt"
    save_checkpoint(state, stored)
    run_export(export_config(f"checkpoint={stored}", f"out={tmp_path / 'd'}", "quantize=true"))
    assert len(exported) == 2
