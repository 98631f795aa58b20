import json
import warnings

import pytest
import torch

from autodeeplab.engine.checkpoint import (
    checkpoint_stage,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


def test_rng_state_restores_every_generator():
    import random

    import numpy as np

    state = rng_state()

    def draws():
        return (random.random(), float(np.random.rand()), float(torch.rand(())))  # noqa: NPY002

    first = draws()
    assert draws() != first
    set_rng_state(state)
    assert draws() == first


def test_round_trip_and_required_keys(tmp_path):
    state = {"step": 3, "model": {"w": torch.arange(4.0)}}
    save_checkpoint(state, tmp_path / "last.pt")
    loaded = load_checkpoint(tmp_path / "last.pt", required=("step", "model"))
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    with pytest.raises(ValueError, match=r"last.pt lacks keys \['config'\]"):
        load_checkpoint(tmp_path / "last.pt", required=("config",))


def test_a_checkpoint_of_another_stage_is_named_as_such(tmp_path):
    save_checkpoint({"stage": "search", "epoch": 2}, tmp_path / "last.pt")
    assert checkpoint_stage(tmp_path / "last.pt") == "search"
    assert load_checkpoint(tmp_path / "last.pt", stage="search")["epoch"] == 2
    with pytest.raises(ValueError, match="last.pt is a search checkpoint; expected a retrain one"):
        load_checkpoint(tmp_path / "last.pt", required=("step",), stage="retrain")
    save_checkpoint({"epoch": 2}, tmp_path / "plain.pt")  # written before checkpoints said
    assert checkpoint_stage(tmp_path / "plain.pt") is None
    assert load_checkpoint(tmp_path / "plain.pt", stage="retrain")["epoch"] == 2
    (tmp_path / "torn.pt").write_bytes(b"PK\x03\x04 torn")
    assert checkpoint_stage(tmp_path / "torn.pt") is None


def _write_foreign(tmp_path, kind):
    path = tmp_path / f"{kind}.pt"
    if kind == "json":  # e.g. genotype.json passed as checkpoint=
        path.write_text(json.dumps({"format": "autodeeplab-genotype-v1"}))
    elif kind == "module":  # pickled code: weights_only refuses it
        torch.save({"model": torch.nn.Linear(2, 2)}, path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "torchscript":  # an export's model.pt
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), path)
    else:  # a torn copy
        save_checkpoint({"w": torch.zeros(1000)}, tmp_path / "whole.pt")
        path.write_bytes((tmp_path / "whole.pt").read_bytes()[:200])
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("json", "is not one of this library's"),
        ("module", "is not one of this library's"),
        ("tensor", "holds a Tensor"),
        ("torchscript", r"is a TorchScript module \(an export: load it with torch.jit.load\)"),
        ("torn", r"cannot be read \(torn, or not a torch.save file\)"),
    ],
)
def test_a_foreign_file_is_one_line_naming_it(tmp_path, kind, message):
    path = _write_foreign(tmp_path, kind)
    with pytest.raises(ValueError, match=message) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert str(path) in text and "\n" not in text and "weights_only" not in text


def test_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere.pt")
    # checkpoint= on the command line: not the working directory
    with pytest.raises(FileNotFoundError, match="^checkpoint is empty; pass checkpoint=<a .pt"):
        load_checkpoint("")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(IsADirectoryError, match="no \\*.pt file is in it or in its checkpoints/"):
        load_checkpoint(run)
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(b"")
    with pytest.raises(IsADirectoryError) as info:
        load_checkpoint(run)  # a run directory: its files are named where they are
    expected = f"checkpoint files there: {run}/checkpoints/best.pt, {run}/checkpoints/last.pt"
    assert expected in str(info.value)


def test_cuda_states_are_restored_for_the_gpus_there_are(monkeypatch):
    # A checkpoint written where two GPUs were visible, resumed where one is.
    state, restored = rng_state(), []  # this machine's CPU generators
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    state["cuda"] = [torch.zeros(8, dtype=torch.uint8), torch.ones(8, dtype=torch.uint8)]
    set_rng_state(state)
    assert len(restored) == 1 and torch.equal(restored[0], state["cuda"][0])
