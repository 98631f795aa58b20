"""The stages under ``torchrun --standalone --nproc_per_node 2`` (gloo on the CPU): one run
directory written once by rank 0, exact resume, and evaluation equal to one process's."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from autodeeplab import Genotype, load_model
from autodeeplab.conf_path import CONF_DIR, stage_search_path
from autodeeplab.engine.config import store_schema, to_config
from autodeeplab.evaluate.config import EvaluateConfig
from autodeeplab.evaluate.run import run_evaluate

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
COMMON = ["threads=1", "progress=false"]
SEARCH = ["experiment=smoke"]  # 3 epochs, architecture steps from the second
RETRAIN = ["experiment=smoke", "train.iterations=12", "train.val_every=6"]
STOP_AFTER = Path(__file__).parents[1] / "stop_after.py"


def _torchrun(stage, *args, stop_after=None):
    """The torchrun command of ``stage`` on two processes; ``stop_after``: stopped right after
    that many records (``tests/stop_after.py``; SIGTERM to torchrun, which ends its workers)."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    program = ["-m"] if stop_after is None else [str(STOP_AFTER), str(stop_after)]
    return [*launcher, "--nproc_per_node", "2", *program, f"autodeeplab.{stage}", *COMMON, *args]


def _run(cwd, stage, *args, check=True, stop_after=None):
    result = subprocess.run(
        _torchrun(stage, *args, stop_after=stop_after),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return result


def _interrupted(cwd, run_dir, stage, *args, records=1):
    """Run ``stage`` into ``run_dir``, stopped right after ``records`` records; returns
    ``run_dir``."""
    _run(cwd, stage, f"hydra.run.dir={run_dir}", *args, check=False, stop_after=records)
    return run_dir


def _names(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*"))


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("search")
    result = _run(cwd, "search", *SEARCH)  # the run directory is Hydra's default
    (run_dir,) = (cwd / "runs" / "search").iterdir()  # one, agreed on by both ranks
    return run_dir, result


@pytest.fixture(scope="module")
def retrain_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("retrain") / "run"
    _run(run_dir.parent, "retrain", f"hydra.run.dir={run_dir}", *RETRAIN)
    return run_dir


def test_search_writes_one_run_directory_once(search_run):
    run_dir, result = search_run
    epochs = [f"genotypes/epoch_{e:03d}.json" for e in (1, 2, 3)]
    names = _names(run_dir)
    events = [n for n in names if n.startswith("events.out.tfevents")]
    assert len(events) == 1  # one TensorBoard writer: rank 0's
    assert names == sorted(
        [".hydra", ".hydra/config.yaml", ".hydra/overrides.yaml", ".lock", "arch_history.npz"]
        + ["checkpoints", "checkpoints/last.pt", "genotype.json", "genotypes", *epochs]
        + ["metrics.jsonl", "search.log", "split.json", *events]
    )
    log = (run_dir / "search.log").read_text()
    assert log.count("epoch 3/3") == 1 and "rank 1" not in log
    # Rank 1 logs warnings only, to the console: the epoch lines come once.
    assert (result.stdout + result.stderr).count("epoch 3/3") == 1
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch"] == 3
    history = np.load(run_dir / "arch_history.npz")
    assert not np.allclose(history["alpha"][0], history["alpha"][2])  # architecture steps ran
    decoded = Genotype.from_dict(state["genotype"], levels=3)
    assert decoded == Genotype.from_json(run_dir / "genotype.json")


def test_search_resumes_exactly_under_torchrun(search_run, tmp_path):
    full, _ = search_run
    # Stopped after the second epoch, the first with architecture steps (Adam's moments).
    killed = _interrupted(tmp_path, tmp_path / "killed", "search", *SEARCH, records=2)
    assert not (killed / "genotype.json").exists()
    state = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["optimisers"]["arch"]["state"]
    _run(tmp_path, "search", f"hydra.run.dir={killed}", *SEARCH, "resume=true")
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    timing = ("seconds", "peak_memory_mib")
    assert [{k: v for k, v in r.items() if k not in timing} for r in a["records"]] == [
        {k: v for k, v in r.items() if k not in timing} for r in b["records"]
    ]
    assert Genotype.from_json(full / "genotype.json") == Genotype.from_json(
        killed / "genotype.json"
    )


def test_resume_with_another_number_of_processes_is_refused(search_run, tmp_path):
    run_dir, _ = search_run
    result = subprocess.run(
        [sys.executable, "-m", "autodeeplab.search", *COMMON, *SEARCH]
        + [f"hydra.run.dir={run_dir}", "resume=true"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 2
    assert "with 1 process(es), but" in result.stdout + result.stderr


def test_an_error_on_rank_0_stops_every_rank(search_run, tmp_path):
    run_dir, _ = search_run
    result = _run(tmp_path, "search", *SEARCH, f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "already holds a run" in output and "[rank 1][ERROR]" in output


def test_retrain_writes_one_run_directory_once(retrain_run):
    names = _names(retrain_run)
    events = [n for n in names if n.startswith("events.out.tfevents")]
    assert len(events) == 1
    assert names == sorted(
        [".hydra", ".hydra/config.yaml", ".hydra/overrides.yaml", ".lock", "checkpoints"]
        + ["checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl", "retrain.log", *events]
    )
    records = [json.loads(x) for x in (retrain_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [6, 12]
    state = torch.load(retrain_run / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    # Each rank draws its own random numbers (Drop Path), from its own seed.
    assert not torch.equal(state["rank_rng"][0]["torch"], state["rank_rng"][1]["torch"])
    model = load_model(retrain_run / "checkpoints" / "best.pt")  # plain BatchNorm, no "module."
    assert model(torch.randn(1, 3, 32, 32))["out"].shape == (1, 5, 32, 32)


def test_retrain_resumes_exactly_under_torchrun(retrain_run, tmp_path):
    killed = _interrupted(tmp_path, tmp_path / "killed", "retrain", *RETRAIN)
    step = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert step == 6  # stopped after its first validation
    _run(tmp_path, "retrain", f"hydra.run.dir={killed}", *RETRAIN, "resume=true")
    a = torch.load(retrain_run / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name
    assert [r["miou"] for r in a["records"]] == [r["miou"] for r in b["records"]]
    assert [r["train_loss"] for r in a["records"]] == [r["train_loss"] for r in b["records"]]


def test_evaluate_on_two_processes_equals_one_process(retrain_run, tmp_path):
    checkpoint = retrain_run / "checkpoints" / "best.pt"
    overrides = ["experiment=smoke", f"checkpoint={checkpoint}"]
    logs = f"hydra.run.dir={tmp_path / 'logs'}"  # not the default folder under $TMPDIR
    _run(tmp_path, "evaluate", *overrides, f"out={tmp_path / 'two.json'}", logs)
    store_schema("evaluate_schema", EvaluateConfig)
    with initialize_config_dir(config_dir=f"{CONF_DIR}/evaluate", version_base=None):
        cfg = compose(
            "evaluate",
            overrides=[*COMMON, *overrides, f"out={tmp_path / 'one.json'}"]
            + [stage_search_path(CONF_DIR)],
        )
    one = run_evaluate(to_config(cfg, EvaluateConfig))
    two = json.loads((tmp_path / "two.json").read_text())
    # Summed confusion matrices are exact: the scores agree to the last digit.
    assert {k: v for k, v in two.items() if k != "out"} == json.loads(json.dumps(one))
