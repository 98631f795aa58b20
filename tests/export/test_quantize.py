"""Int8 post-training quantization of the smoke checkpoint's ONNX model."""

import pytest
import torch

from autodeeplab.data.base import DatasetError
from autodeeplab.export import run_export
from autodeeplab.export.quantize import fit_to_size


def test_fit_to_size_keeps_the_aspect_and_crops_the_centre():
    image = torch.arange(2 * 4, dtype=torch.float32).view(1, 2, 4).expand(3, 2, 4)
    mask = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 3]])
    fitted, fitted_mask = fit_to_size(image, mask, (4, 4))  # scale 2 -> 4x8, centre 4 columns
    assert fitted.shape == (3, 4, 4) and fitted_mask.shape == (4, 4)
    assert fitted_mask.tolist() == [[1, 1, 2, 2]] * 4


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
