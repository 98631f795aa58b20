"""End-to-end runs of ``python -m autodeeplab.search experiment=smoke``."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from autodeeplab import PRIMITIVES, Genotype, cell_edges
from autodeeplab.data import load_split

pytestmark = pytest.mark.slow

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SMOKE = ["experiment=smoke", "threads=1", "progress=false"]
STOP_AFTER = Path(__file__).parents[1] / "stop_after.py"


def _cmd(run_dir, *extra):
    return [sys.executable, "-m", "autodeeplab.search", *SMOKE, f"hydra.run.dir={run_dir}", *extra]


def _run(run_dir, *extra, check=True):
    result = subprocess.run(
        _cmd(run_dir, *extra),
        capture_output=True,
        text=True,
        env=ENV,
        cwd=run_dir.parent,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("search") / "run"
    _run(run_dir)
    return run_dir


def test_smoke_run_writes_the_run_directory(smoke_run):
    d = smoke_run
    for name in (
        ".hydra/config.yaml",
        "genotype.json",
        "arch_history.npz",
        "metrics.jsonl",
        "checkpoints/last.pt",
        "split.json",
    ):
        assert (d / name).is_file(), name
    assert sorted(p.name for p in (d / "genotypes").iterdir()) == [
        "epoch_001.json",
        "epoch_002.json",
        "epoch_003.json",
    ]
    assert any(p.name.startswith("events.out.tfevents") for p in d.iterdir())

    genotype = Genotype.from_json(d / "genotype.json")
    assert len(genotype.cell) == 3 and len(genotype.path) == 3  # the tiny space
    assert genotype == Genotype.from_json(d / "genotypes" / "epoch_003.json")

    history = np.load(d / "arch_history.npz")
    assert history["alpha"].shape == (3, 9, 8)
    assert history["beta"].shape == (3, 3, 3, 3)
    assert history["epoch"].tolist() == [1, 2, 3]
    assert tuple(history["op_names"]) == PRIMITIVES
    assert list(history["edge_names"]) == cell_edges(3)
    # Architecture steps start after epoch 1: alpha moves in epochs 2 and 3.
    assert not np.allclose(history["alpha"][0], history["alpha"][1])
    assert not np.allclose(history["alpha"][1], history["alpha"][2])

    records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    for r in records:
        for key in ("train_loss", "val_loss", "miou", "seconds", "peak_memory_mib", "path"):
            assert key in r
        assert 0.0 <= r["miou"] <= 1.0 and r["peak_memory_mib"] > 0
    assert records[0]["arch_loss"] is None and records[2]["arch_loss"] > 0

    a, b = load_split(d / "split.json")
    assert not set(a) & set(b) and sorted(a + b) == list(range(16))

    state = torch.load(d / "checkpoints" / "last.pt", weights_only=False)
    keys = (
        "model",
        "optimisers",
        "rng",
        "split",
        "epoch",
        "config",
        "model_args",
        "history",
        "records",
        "genotype",
    )
    for key in keys:
        assert key in state
    assert state["epoch"] == 3


def test_a_finished_run_is_never_overwritten(smoke_run):
    kept = [
        "genotype.json",
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "metrics.jsonl",
        "search.log",  # the refusal is on the console only
    ]
    before = {name: (smoke_run / name).read_bytes() for name in kept}
    result = _run(smoke_run, "seed=5", check=False)
    assert result.returncode == 2
    assert "already holds a run" in result.stderr + result.stdout
    assert {name: (smoke_run / name).read_bytes() for name in kept} == before

    # Nor does another stage take it over, resumed or not, or leave its log file there.
    listing = sorted(p.name for p in smoke_run.iterdir())
    for extra in ([], ["resume=true"]):
        result = subprocess.run(
            [sys.executable, "-m", "autodeeplab.retrain", "experiment=smoke", "progress=false",
             f"hydra.run.dir={smoke_run}", *extra],
            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
        assert result.returncode == 2
        assert "holds a search run" in result.stderr + result.stdout
        assert sorted(p.name for p in smoke_run.iterdir()) == listing


def test_resume_after_a_kill_matches_an_uninterrupted_run(smoke_run, tmp_path):
    full = smoke_run  # 3 epochs, architecture steps from the second
    killed = tmp_path / "killed"
    # Killed after the second epoch, the first with architecture steps: the resume must
    # restore Adam's moments of alpha and beta too.
    stop = [sys.executable, str(STOP_AFTER), "2", "autodeeplab.search"]
    command = [*stop, *SMOKE, f"hydra.run.dir={killed}"]
    result = subprocess.run(command, capture_output=True, env=ENV, cwd=tmp_path, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert not (killed / "genotype.json").exists()
    state = torch.load(killed / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 2 and state["optimisers"]["arch"]["state"]  # Adam has moments

    _run(killed, "resume=true")
    a, b = np.load(full / "arch_history.npz"), np.load(killed / "arch_history.npz")
    assert a["epoch"].tolist() == b["epoch"].tolist() == [1, 2, 3]
    assert np.abs(a["alpha"] - b["alpha"]).max() <= 1e-6
    assert np.abs(a["beta"] - b["beta"]).max() <= 1e-6
    assert Genotype.from_json(full / "genotype.json") == Genotype.from_json(
        killed / "genotype.json"
    )
    lines = (killed / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3]
    # Resume is exact: the final weights, optimiser states and records agree bit for bit.
    state_full = torch.load(full / "checkpoints" / "last.pt", weights_only=True)
    state_killed = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in state_full["model"].items():
        assert torch.equal(tensor, state_killed["model"][name]), name
    momentum = state_full["optimisers"]["weights"]["state"]
    for key, value in momentum.items():
        assert torch.equal(
            value["momentum_buffer"],
            state_killed["optimisers"]["weights"]["state"][key]["momentum_buffer"],
        )
    timing = ("seconds", "peak_memory_mib")
    assert [{k: v for k, v in r.items() if k not in timing} for r in state_full["records"]] == [
        {k: v for k, v in r.items() if k not in timing} for r in state_killed["records"]
    ]
    assert sorted(p.name for p in (killed / "genotypes").iterdir()) == [
        f"epoch_{e:03d}.json" for e in (1, 2, 3)
    ]


def test_resume_with_changed_settings_is_refused(smoke_run, tmp_path):
    result = _run(smoke_run, "resume=true", "optim.lr=0.5", "search.epochs=6", check=False)
    assert result.returncode == 2
    output = result.stderr + result.stdout
    assert "optim.lr: 0.025 -> 0.5" in output and "search.epochs: 3 -> 6" in output


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    result = _run(tmp_path / "empty", "resume=true", check=False)
    assert result.returncode != 0
    assert "no checkpoint" in result.stderr + result.stdout
    # With the default run directory (runs/search/<time>) in a fresh clone, the refusal
    # leaves neither the run directory nor the runs/search/ folders Hydra made above it.
    command = [sys.executable, "-m", "autodeeplab.search", *SMOKE, "resume=true"]
    fresh = tmp_path / "clone"
    fresh.mkdir()
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=fresh)
    assert result.returncode == 2 and "no checkpoint" in result.stderr + result.stdout
    assert not any(fresh.iterdir())


def test_activation_checkpointing_runs_the_same_search(smoke_run, tmp_path):
    run_dir = tmp_path / "run"
    _run(run_dir, "search.checkpoint=true")
    a, b = np.load(smoke_run / "arch_history.npz"), np.load(run_dir / "arch_history.npz")
    assert np.abs(a["alpha"] - b["alpha"]).max() <= 1e-5
    assert np.abs(a["beta"] - b["beta"]).max() <= 1e-5
    assert Genotype.from_json(smoke_run / "genotype.json") == Genotype.from_json(
        run_dir / "genotype.json"
    )


def test_bf16_search_runs_and_keeps_alpha_beta_float32(tmp_path):
    run_dir = tmp_path / "run"
    _run(run_dir, "search.precision=bf16", "search.epochs=2")
    history = np.load(run_dir / "arch_history.npz")
    assert history["alpha"].dtype == history["beta"].dtype == np.float32
    assert np.isfinite(history["alpha"]).all() and np.isfinite(history["beta"]).all()
    Genotype.from_json(run_dir / "genotype.json")


def test_partial_channel_search_runs_and_stores_the_smaller_supernet(tmp_path):
    run_dir = tmp_path / "run"
    _run(run_dir, "space.partial_channels=2", "search.epochs=2")
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    # Node (1, 0) of the tiny space has F = 4 channels; its mixed ops see 4 / 2 of them.
    weight = state["model"]["nodes.0.cell.readers.prev.atrous3"]
    assert weight.shape == (3, 2, 2, 3, 3)  # (edges from prev: one per block, C/K, C/K, 3, 3)
    Genotype.from_json(run_dir / "genotype.json")


def test_a_sweep_runs_each_seed_in_its_own_run_directory(tmp_path):
    # python -m autodeeplab.search -m seed=0,1: runs/search/multirun/<time>/<n>, from cwd.
    result = subprocess.run(
        [sys.executable, "-m", "autodeeplab.search", "-m", *SMOKE, "search.epochs=2", "seed=0,1"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "runs/search/multirun").iterdir()
    runs = [sweep / "0", sweep / "1"]
    for run in runs:
        assert (run / "genotype.json").is_file() and (run / "checkpoints/last.pt").is_file()
    seeds = [yaml.safe_load((run / ".hydra/config.yaml").read_text())["seed"] for run in runs]
    assert seeds == [0, 1]
    assert load_split(runs[0] / "split.json") != load_split(runs[1] / "split.json")


def test_a_retrain_stopped_before_its_first_checkpoint_is_not_taken_over(tmp_path):
    run_dir = tmp_path / "retrain"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra/config.yaml").write_text("genotype: paper\n")
    (run_dir / "retrain.log").write_text("[retrain] iteration 1\n")
    result = _run(run_dir, check=False)
    assert result.returncode == 2
    assert "stopped before its first checkpoint (retrain.log)" in result.stdout
    assert (run_dir / ".hydra/config.yaml").read_text() == "genotype: paper\n"
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "retrain.log"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_a_deterministic_gpu_search_repeats_graphed_and_resumed(tmp_path):
    # search.deterministic on a GPU: a search whose steps replay from CUDA graphs (with
    # checkpointing inside them), killed after the second epoch and resumed (the graphs are
    # captured again, after the checkpoint is loaded), ends bit for bit where an uninterrupted
    # eager search ends. Without the setting, two eager smoke searches on an H100 differed by
    # up to 0.02 in alpha.
    common = ["device=cuda", "search.checkpoint=true", "search.deterministic=true"]
    graphs = [*common, "search.cuda_graphs=true"]
    eager, killed = tmp_path / "eager", tmp_path / "killed"
    _run(eager, *common)
    stop = [sys.executable, str(STOP_AFTER), "2", "autodeeplab.search"]
    command = [*stop, *SMOKE, *graphs, f"hydra.run.dir={killed}"]
    result = subprocess.run(command, capture_output=True, env=ENV, cwd=tmp_path, timeout=600)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    _run(killed, *graphs, "resume=true")
    a, b = np.load(eager / "arch_history.npz"), np.load(killed / "arch_history.npz")
    assert a["epoch"].tolist() == b["epoch"].tolist() == [1, 2, 3]
    assert np.array_equal(a["alpha"], b["alpha"]) and np.array_equal(a["beta"], b["beta"])
    state_eager = torch.load(eager / "checkpoints" / "last.pt", weights_only=True)
    state_killed = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)
    for name, tensor in state_eager["model"].items():
        assert torch.equal(tensor, state_killed["model"][name]), name
    assert Genotype.from_json(eager / "genotype.json") == Genotype.from_json(
        killed / "genotype.json"
    )
