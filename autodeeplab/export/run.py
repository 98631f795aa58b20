"""Export a retrain checkpoint (or a preset with random weights) for a runtime, check it against
the eager model, time it and write ``export.json``."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from autodeeplab.data import dataset_from_config
from autodeeplab.data.config import DataConfig
from autodeeplab.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from autodeeplab.engine.checkpoint import check_checkpoint_path, load_checkpoint
from autodeeplab.export.benchmark import count_multi_adds, count_parameters, latency_report
from autodeeplab.export.config import PRESET_NUM_CLASSES, PRESET_PREFIX, ExportConfig
from autodeeplab.export.formats import (
    FILE_NAMES,
    FORMATS,
    INPUT_NAME,
    OUTPUT_NAME,
    check_onnx_options,
    export_onnx,
    export_torchscript,
    load_runner,
)
from autodeeplab.export.parity import ParityError, check_parity, describe_failures
from autodeeplab.export.quantize import quantization_report
from autodeeplab.files import atomic_write_text
from autodeeplab.models import PRESETS, AutoDeepLab
from autodeeplab.models.loading import MODEL_KEYS, model_from_checkpoint

log = logging.getLogger(__name__)

REPORT_NAME = "export.json"
#: The report of a failed export that did not replace an earlier one.
FAILED_REPORT_NAME = "export.failed.json"
INT8_NAME = "model.int8.onnx"
#: Every file an export writes into its folder (an existing one blocks a new export).
ARTIFACTS = (*FILE_NAMES.values(), INT8_NAME, REPORT_NAME)
RUNTIMES = {"onnx": "onnxruntime_cpu", "torchscript": "torchscript_cpu"}


def preset_name(checkpoint: str) -> str | None:
    """``"preset:s"`` -> ``"auto_deeplab_s"`` (the canonical name); ``None`` for a file path."""
    if not checkpoint.startswith(PRESET_PREFIX):
        return None
    name = checkpoint[len(PRESET_PREFIX) :]
    if name not in PRESETS:
        raise ValueError(f"checkpoint={checkpoint!r}: unknown preset; known: {sorted(PRESETS)}")
    return PRESETS[name].__name__


def export_dir(cfg: ExportConfig) -> Path:
    """``cfg.out``, else ``<run dir>/export/<format>/`` for a checkpoint (the run dir is the
    folder above ``checkpoints/``) or ``exports/auto_deeplab_<s|m|l>/<format>/`` for a preset
    (its canonical name, :func:`preset_name`)."""
    if cfg.out is not None:
        return Path(cfg.out)
    preset = preset_name(cfg.checkpoint)
    if preset is not None:
        return Path("exports") / preset / cfg.format
    checkpoint = Path(cfg.checkpoint)
    parent = checkpoint.parent
    run_dir = parent.parent if parent.name == "checkpoints" else parent
    return run_dir / "export" / cfg.format


def _size(value: list[int], key: str) -> tuple[int, int]:
    if len(value) != 2 or any(int(v) < 1 for v in value):
        raise ValueError(f"{key}={list(value)}; expected [height, width] of positive ints")
    return int(value[0]), int(value[1])


def _check_options(cfg: ExportConfig) -> None:
    if cfg.format not in FORMATS:
        raise ValueError(f"format={cfg.format!r}; expected one of {FORMATS}")
    if cfg.format == "onnx":
        check_onnx_options(cfg.opset, cfg.onnx_exporter)
    if not cfg.tolerance > 0:
        raise ValueError(f"tolerance={cfg.tolerance}; expected a positive number")
    if cfg.quantize and cfg.format != "onnx":
        raise ValueError("quantize=true needs format=onnx (int8 models run on ONNX Runtime)")
    if cfg.quantize and preset_name(cfg.checkpoint) is not None:
        raise ValueError(
            f"quantize=true needs calibration images, and {cfg.checkpoint} (random weights) has "
            "no dataset; quantize a retrain checkpoint instead"
        )
    if cfg.num_classes is not None and cfg.num_classes < 1:
        raise ValueError(f"num_classes={cfg.num_classes}; expected at least 1")
    if cfg.latency_warmup < 0 or cfg.latency_runs < 1:
        raise ValueError(
            f"latency_warmup={cfg.latency_warmup}, latency_runs={cfg.latency_runs}; expected "
            ">= 0 and >= 1"
        )
    if cfg.quantize and min(cfg.calibration_samples, cfg.quant_val_samples) < 1:
        raise ValueError("calibration_samples and quant_val_samples must be at least 1")
    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads={cfg.threads}; expected a positive number or null")
    if cfg.data_root is not None and not cfg.quantize:
        raise ValueError(f"data_root={cfg.data_root} is read by quantize=true only")
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if cfg.format == "onnx" and missing:
        raise ValueError(
            f"format=onnx needs {' and '.join(missing)}: install the export extra "
            "(pip install -e '.[export]' in the repository)"
        )


def _claim(folder: Path, overwrite: bool) -> None:
    """Refuse a folder holding an earlier export (unless ``overwrite``) or a path that is no
    folder. An earlier export stays as it is until the new one is complete (:func:`_publish`)."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file; expected a folder for the export (out=)")
    existing = [folder / name for name in ARTIFACTS if (folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{folder} already holds an export ({existing[0].name}); pass overwrite=true or "
            "out=<another folder>"
        )


#: The hidden folder an export is built in, inside its output folder. Its process holds an
#: exclusive ``flock`` on the folder's :data:`STAGING_LOCK` for the whole export; the kernel
#: releases it when the process ends, however it ends (SIGKILL, out of memory), so a later
#: export can tell a folder left behind from one still being built, also across PID
#: namespaces and hosts that share the file system.
STAGING_PREFIX = ".staging-"
STAGING_LOCK = ".lock"


def _make_staging(folder: Path) -> tuple[Path, IO]:
    """A new staging folder in ``folder`` and the open, locked handle of its lock file. The
    lock is taken under another name and the file renamed into place, so a lock file that a
    concurrent export can see is always locked."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        handle = open(staging / f"{STAGING_LOCK}.new", "w")  # noqa: SIM115 (held for the export)
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.rename(staging / f"{STAGING_LOCK}.new", staging / STAGING_LOCK)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging, handle


def _remove_stale_staging(folder: Path) -> None:
    """Remove the staging folders in ``folder`` whose export ended without cleaning up: those
    whose lock file (:data:`STAGING_LOCK`) no process holds. Folders being built (their lock
    held) and folders without a lock file (earlier versions', or one just being made) stay."""
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        try:
            handle = open(staging / STAGING_LOCK)  # noqa: SIM115 (closed below)
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # an export in progress
            shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            log.info("removed %s, left by an export that did not finish", staging)


def _publish(staging: Path, folder: Path) -> None:
    """Move the export built in ``staging`` into ``folder``, replacing an earlier export's
    files; files of an earlier export that this one does not write are removed, and so is the
    report of a failed attempt kept beside it, so the folder holds one consistent export."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*ARTIFACTS, FAILED_REPORT_NAME):
        staged, target = staging / name, folder / name
        if staged.exists():
            os.replace(staged, target)
        elif target.exists():
            target.unlink()


def _load(cfg: ExportConfig) -> tuple[AutoDeepLab, dict[str, Any], DataConfig | None]:
    """The model, how it was obtained (for ``export.json``) and, for a checkpoint, its data."""
    preset = preset_name(cfg.checkpoint)
    if preset is not None:
        torch.manual_seed(cfg.seed)
        classes = PRESET_NUM_CLASSES if cfg.num_classes is None else cfg.num_classes
        model = PRESETS[preset](num_classes=classes)
        model = calibrate_batch_norm(model, tuple(cfg.export_size))
        source = {"preset": preset, "weights": "random", "seed": cfg.seed}
        return model, source, None
    state = load_checkpoint(cfg.checkpoint, required=MODEL_KEYS)
    model = model_from_checkpoint(state, cfg.checkpoint)
    if cfg.num_classes is not None and cfg.num_classes != model.num_classes:
        raise ValueError(
            f"num_classes={cfg.num_classes}: checkpoint {cfg.checkpoint} has a head of "
            f"{model.num_classes} classes, which it keeps (num_classes is a preset's); leave "
            "num_classes unset"
        )
    data = None
    if cfg.quantize:
        config = state.get("config") or {}
        if not isinstance(config.get("data"), dict):
            raise ValueError(
                f"checkpoint {cfg.checkpoint} stores no data config; quantize=true needs it"
            )
        data = DataConfig(**config["data"])
        if data.name == "textures":
            # Generated in memory, so it reads no files; a root that an earlier version stored
            # (and ignored) is dropped.
            if cfg.data_root is not None:
                raise ValueError(
                    f"data_root={cfg.data_root}: checkpoint {cfg.checkpoint} was trained on "
                    "data=textures, which is generated in memory; leave data_root unset"
                )
            data = dataclasses.replace(data, root=None)
        elif cfg.data_root is not None:
            data = dataclasses.replace(data, root=cfg.data_root)
        # Read the calibration and validation data now rather than after the export.
        for split in ("train", "val"):
            try:
                dataset_from_config(data, split, 1)
            except (OSError, ValueError) as err:
                raise type(err)(
                    f"{err} (quantize=true reads the {split} images of checkpoint "
                    f"{cfg.checkpoint}'s dataset, data.root={data.root}; if it has moved, "
                    "pass data_root=<its folder now>)"
                ) from None
    return model, {"checkpoint": str(cfg.checkpoint)}, data


def calibrate_batch_norm(model: AutoDeepLab, size: tuple[int, int], passes: int = 2) -> AutoDeepLab:
    """``model`` in eval mode with BatchNorm statistics of random images (``passes`` batches
    of two, ``size`` (H, W)). With random weights and the initial statistics (mean 0,
    variance 1) the signal shrinks cell after cell until the logits hardly depend on the image
    (for Auto-DeepLab-S a new image moves them by about 6e-5), so a parity check would compare
    little more than the classifier's bias; with these it compares a network that sees its
    input."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randn(2, 3, *size))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    return model.eval()


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check and time the model of ``cfg.checkpoint``; writes the model file and
    ``export.json`` (with ``"passed"``) and returns the report. Raises :class:`ParityError`
    (after writing the report) when the exported model disagrees with the eager one."""
    _check_options(cfg)
    export_size = _size(cfg.export_size, "export_size")
    check_size = _size(cfg.check_size, "check_size")
    if check_size == export_size:
        raise ValueError(
            f"check_size={list(check_size)} equals export_size; the second parity check needs "
            "another size (odd, e.g. [57, 73]) to show a size baked into the graph"
        )
    latency_size = _size(cfg.latency_size, "latency_size")
    sizes = (export_size, check_size, latency_size)
    if preset_name(cfg.checkpoint) is None:
        check_checkpoint_path(cfg.checkpoint)  # a mistyped path first, not the output folder
    folder = export_dir(cfg)
    _claim(folder, cfg.overwrite)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    threads = torch.get_num_threads()
    model, source, data = _load(cfg)
    # Built in a hidden folder inside the output folder (the same file system) and moved in
    # once complete: a failure leaves an earlier export (overwrite=true) as it was.
    made = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(folder)
    staging, lock = _make_staging(folder)
    try:
        with _terminate_as_exit():
            return _export(cfg, model, source, data, staging, folder, threads, sizes)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.close()
        if made and not any(folder.iterdir()):
            folder.rmdir()


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, ``timeout``, a scheduler ending the job) exits
    through the callers' ``finally`` clauses, as Ctrl-C does, so the hidden folder the export
    is built in is removed. Only in the main thread, where Python handles signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_term)
    try:
        yield
    finally:  # a handler installed outside Python reads back as None
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _export(
    cfg: ExportConfig,
    model: AutoDeepLab,
    source: dict[str, Any],
    data: DataConfig | None,
    staging: Path,
    folder: Path,
    threads: int,
    sizes: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
) -> dict[str, Any]:
    """:func:`run_export` once the options, the folder and the model are checked: builds the
    export in ``staging`` and publishes it to ``folder``."""
    export_size, check_size, latency_size = sizes
    path = staging / FILE_NAMES[cfg.format]
    log.info("exporting to %s", folder / path.name)
    if cfg.format == "onnx":
        method = export_onnx(
            model, path, size=export_size, opset=cfg.opset, exporter=cfg.onnx_exporter
        )
    else:
        method = export_torchscript(model, path, size=export_size)
    runner = load_runner(cfg.format, path, threads=threads)
    parity = check_parity(
        model, runner, [(1, export_size), (2, check_size)], tolerance=cfg.tolerance, seed=cfg.seed
    )
    dims = ["batch", 3, "height", "width"]
    report: dict[str, Any] = {
        "format": cfg.format,
        "file": path.name,
        cfg.format: method,
        "source": source,
        "model_args": model.model_args,
        "input": {
            "name": INPUT_NAME,
            "shape": dims,
            "dtype": "float32",
            "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.num_classes, "height", "width"]},
        "export_size": list(export_size),
        "parity": parity,
        "params": count_parameters(model),
        "multi_adds": count_multi_adds(model, latency_size),
        "multi_adds_size": list(latency_size),
        "latency": None,
        "versions": _versions(),
    }
    if parity["passed"]:
        log.info("parity passed; timing at %dx%d", *latency_size)
        report["latency"] = latency_report(
            model,
            runner,
            RUNTIMES[cfg.format],
            latency_size,
            warmup=cfg.latency_warmup,
            runs=cfg.latency_runs,
        )
        if cfg.quantize:
            log.info("quantizing to int8")
            report["quantization"] = quantization_report(
                path,
                staging / INT8_NAME,
                data,
                size=export_size,
                calibration_samples=cfg.calibration_samples,
                val_samples=cfg.quant_val_samples,
                threads=threads,
                latency=report["latency"],
            )
    report["passed"] = parity["passed"]
    text = json.dumps(report, indent=2) + "\n"
    if not parity["passed"] and any((folder / name).exists() for name in ARTIFACTS):
        # A failed export does not replace an earlier one (overwrite=true): its report goes
        # beside it.
        atomic_write_text(folder / FAILED_REPORT_NAME, text)
        raise ParityError(
            f"parity check failed (tolerance {cfg.tolerance}): {describe_failures(parity)}; "
            f"the earlier export in {folder} is kept, this one's report is in "
            f"{folder / FAILED_REPORT_NAME}"
        )
    atomic_write_text(staging / REPORT_NAME, text)
    _publish(staging, folder)
    if not parity["passed"]:
        raise ParityError(
            f"parity check failed for {folder / path.name} (tolerance {cfg.tolerance}): "
            f"{describe_failures(parity)}; report in {folder / REPORT_NAME}"
        )
    log.info("export written to %s", folder)
    return report


def _versions() -> dict[str, str]:
    versions = {"torch": torch.__version__}
    try:
        import onnx
        import onnxruntime

        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__)
    except ImportError:  # TorchScript export needs neither
        pass
    return versions
