"""Typed configuration of the export stage (``conf/export/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

#: Prefix of ``checkpoint`` that names a model preset (random weights) instead of a file.
PRESET_PREFIX = "preset:"
#: A preset's classes where ``num_classes`` is not given (Cityscapes').
PRESET_NUM_CLASSES = 19


@dataclass
class ExportConfig:
    """``conf/export/export.yaml``."""

    # A retrain checkpoint (runs/retrain/<run>/checkpoints/best.pt), or "preset:<name>" (s, m, l,
    # auto_deeplab_s, ...) for a preset with random weights (latency studies; no data).
    checkpoint: str = MISSING
    format: str = "onnx"  # onnx | torchscript
    # Classes of a preset's head (None: 19, Cityscapes'). A checkpoint keeps its own: a value
    # that differs from it is refused.
    num_classes: int | None = None
    seed: int = 0  # seeds a preset's random weights and the parity-check inputs
    # Output folder; None: <run dir>/export/<format>/ for a checkpoint (the run dir is the folder
    # above checkpoints/), exports/auto_deeplab_<s|m|l>/<format>/ under the current directory
    # for a preset.
    out: str | None = None
    overwrite: bool = False  # replace an existing export in the output folder
    # (H, W) of the example image the export traces; the exported graph takes any size.
    export_size: list[int] = field(default_factory=lambda: [513, 513])
    # (H, W) of the second parity check: differs from export_size and is odd, so a size baked
    # into the exported graph shows up as an error or a mismatch.
    check_size: list[int] = field(default_factory=lambda: [385, 449])
    # The check fails when max |exported - eager| > tolerance * max(1, max |eager logit|): an
    # absolute tolerance for logits within [-1, 1], relative to the largest logit above that.
    # float32 rounding alone reaches 8e-4 of the logits of the random-weight presets S and L at
    # 513x513 (another runtime sums in another order); an export error moves them by far more.
    tolerance: float = 2e-3
    # dynamo (torch.export based; falls back to torchscript when it fails) | torchscript
    onnx_exporter: str = "dynamo"
    # ONNX opset version: the dynamo exporter writes 18 or later, the torchscript one 11 or later
    # (the model's bilinear resizing with align_corners needs Resize of opset 11)
    opset: int = 18
    latency_size: list[int] = field(default_factory=lambda: [1024, 2048])  # (H, W), batch 1
    latency_warmup: int = 3  # untimed runs before timing
    latency_runs: int = 20  # timed runs; median and p90 are reported
    threads: int | None = None  # CPU threads for torch and ONNX Runtime (None: torch's default)
    quantize: bool = False  # also write an int8 model (ONNX, checkpoints only) and compare
    calibration_samples: int = 8  # training images that calibrate the int8 activation ranges
    quant_val_samples: int = 8  # validation images for the mIoU before and after quantization
    # Where the checkpoint's dataset lies now, when it has moved since the retrain (None: the
    # data.root stored in the checkpoint); quantize=true reads its images from there.
    data_root: str | None = None
