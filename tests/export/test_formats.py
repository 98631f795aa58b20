"""The exported graphs take any batch, height and width: the dynamo ONNX exporter, and why
one trace serves every input size."""

import pytest
import torch

from autodeeplab import Genotype, build_model
from autodeeplab.export.formats import (
    LogitsOnly,
    export_onnx,
    failure_reason,
    min_input_size,
    onnx_runner,
)
from autodeeplab.export.parity import check_parity

CASES = [(1, (65, 65)), (2, (57, 73)), (3, (64, 96))]


@pytest.fixture(scope="module")
def model():
    """Three cells on the path 1 -> 2 -> 1: a stride-2 cell, then one going back to a finer
    level, whose ``prev_prev`` matches ``prev``'s size at 65x65 but not at 57x73."""
    torch.manual_seed(0)
    genotype = Genotype(cell=Genotype.named("paper").cell, path=(1, 2, 1))
    tiny = {"stem_channels": [8, 8, 16], "aspp_channels": 16, "decoder_channels": 16}
    return build_model(genotype, num_classes=3, filter_multiplier=4, **tiny).eval()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_a_trace_holds_no_input_size(model):
    # ops.resize skips same-size resizes eagerly but not while tracing, so one trace serves
    # every size (odd sizes halve and double back exactly, even ones do not).
    traced = torch.jit.trace(LogitsOnly(model), torch.randn(1, 3, 65, 65), check_trace=False)
    for batch, size in CASES:
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            assert torch.equal(traced(x), model(x)["out"])  # resizing to the same size: identity


@pytest.mark.slow
def test_dynamo_onnx_export_has_dynamic_batch_height_and_width(model, tmp_path):
    path = tmp_path / "model.onnx"
    info = export_onnx(model, path, size=(65, 65), opset=18, exporter="dynamo")
    assert info == {"exporter": "dynamo", "opset": 18, "fallback_reason": None}
    assert min_input_size(model) == 4 * 2**2 + 1
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image,), (logits,) = session.get_inputs(), session.get_outputs()
    assert (image.name, logits.name) == ("image", "logits")
    assert [isinstance(d, str) for d in image.shape] == [True, False, True, True]
    parity = check_parity(model, onnx_runner(path, threads=1), CASES, tolerance=1e-4)
    assert parity["passed"], parity


def test_a_failing_dynamo_export_falls_back_and_says_why(model, tmp_path, monkeypatch):
    import autodeeplab.export.formats as formats

    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr(formats, "_export_dynamo", broken)
    info = export_onnx(model, tmp_path / "model.onnx", size=(65, 65), opset=18, exporter="dynamo")
    assert info == {
        "exporter": "torchscript",
        "opset": 18,
        "fallback_reason": "RuntimeError: unsupported operator",
    }
    parity = check_parity(
        model, onnx_runner(tmp_path / "model.onnx", threads=1), CASES, tolerance=1e-4
    )
    assert parity["passed"]


def test_an_export_size_below_the_dynamo_minimum_falls_back_naming_the_size(model, tmp_path):
    least = min_input_size(model)
    path = tmp_path / "model.onnx"
    info = export_onnx(model, path, size=(least - 1, 40), opset=18, exporter="dynamo")
    assert info["exporter"] == "torchscript"
    assert info["fallback_reason"] == (
        f"export_size [{least - 1}, 40] is below {least}, the smallest height and width "
        "torch.export takes for this model (its coarsest map would be 1x1); an export_size "
        f"of at least [{least}, {least}] uses the dynamo exporter"
    )
    assert check_parity(model, onnx_runner(path, threads=1), CASES, tolerance=1e-4)["passed"]


def test_a_failure_reason_is_one_clean_line_with_its_cause():
    try:
        try:
            raise ValueError("size 1 is specialised\nfull trace")
        except ValueError as inner:
            raise RuntimeError("\x1b[96mstep 1/3\x1b[0m of exporting failed\nnext steps") from inner
    except RuntimeError as err:
        reason = failure_reason(err)
    assert reason == (
        "RuntimeError: step 1/3 of exporting failed (caused by ValueError: size 1 is specialised)"
    )
    assert failure_reason(KeyError()) == "KeyError"


@pytest.mark.parametrize(
    ("opset", "exporter", "message"),
    [
        (
            17,
            "dynamo",
            "writes opset 18 or later; pass onnx_exporter=torchscript for opsets 11 to 17",
        ),
        # Resize with align_corners is opset 11's: the older exporter would fail on it.
        (
            10,
            "torchscript",
            r"opset=10: the model's bilinear resizing \(align_corners\) needs opset 11",
        ),
        (0, "dynamo", "opset=0: the model's bilinear resizing"),
        (18, "tf2onnx", "onnx_exporter='tf2onnx'; expected one of"),
        (99, "dynamo", "opset=99: the installed onnx knows opsets up to"),
        (99, "torchscript", "opset=99: the installed onnx knows opsets up to"),
    ],
)
def test_export_onnx_refuses_what_it_cannot_write(model, tmp_path, opset, exporter, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(model, tmp_path / "m.onnx", size=(65, 65), opset=opset, exporter=exporter)
    assert not (tmp_path / "m.onnx").exists()
