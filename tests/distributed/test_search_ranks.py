"""The search loop's epochs on 2 gloo processes: the ranks read disjoint shards, yet end with
identical weights, alpha, beta and genotype."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from spawn_ranks import run_ranks

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.decode import decode
from autodeeplab.engine import distributed
from autodeeplab.engine.config import store_schema
from autodeeplab.search.config import SearchConfig, to_search_config
from autodeeplab.search.loop import Optimisers, SearchData, evaluate, train_epoch
from autodeeplab.space.supernet import build_supernet

store_schema("search_schema", SearchConfig)


def _smoke() -> SearchConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("search", overrides=["experiment=smoke", "progress=false", "threads=1"])
    return to_search_config(cfg)


def _search_epochs(cfg: SearchConfig, run_dir) -> dict:
    """Two epochs of the loop (the second with architecture steps), then its evaluation."""
    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    data = SearchData.prepare(cfg, run_dir, device, *SearchData.datasets(cfg))
    net = build_supernet(num_classes=cfg.data.num_classes, **vars(cfg.space))
    opt = Optimisers.build(net, cfg)
    distributed.broadcast_module_(net)
    initial = [p.detach().clone() for p in net.arch_parameters()]
    seen = []
    for epoch in (1, 2):
        loader = data.loader(data.split_a, cfg.search.batch_size, seed=cfg.seed, epoch=epoch)
        seen += [i for batch in loader.batch_sampler for i in batch]
        train_epoch(net, opt, data, cfg, epoch, device)
        opt.schedule.step()
    buffers_differ = any(
        not torch.equal(a, b)
        for a, b in zip(*distributed.all_gather_object([b.clone() for b in net.buffers()]))
    )
    distributed.broadcast_module_(net, buffers_only=True)
    val = data.loader(data.val, cfg.search.eval_batch_size, seed=0, epoch=0, train=False)
    scores = evaluate(net, val, cfg.data.num_classes, cfg.data.ignore_index, device)
    alpha, beta = (p.detach().clone() for p in net.arch_parameters())
    return {
        "state": {k: v.clone() for k, v in net.state_dict().items()},
        "momentum": [s["momentum_buffer"] for s in opt.weights.state.values()],
        "adam": [s["exp_avg"] for s in opt.arch.state.values()],
        "initial": initial,
        "genotype": decode(alpha, beta).to_dict(),
        "seen": [data.split_a.indices[i] for i in seen],
        "buffers_differed": buffers_differ,
        "scores": scores,
    }


@pytest.mark.slow
def test_ranks_agree_after_weight_and_architecture_steps(tmp_path):
    cfg = _smoke()
    r0, r1 = run_ranks(_search_epochs, tmp_path / "out", cfg, tmp_path / "run")
    assert r0["state"].keys() == r1["state"].keys()
    for name, value in r0["state"].items():
        assert torch.equal(value, r1["state"][name]), name  # weights, alpha, beta, buffers
    for a, b in zip(r0["momentum"] + r0["adam"], r1["momentum"] + r1["adam"], strict=True):
        assert torch.equal(a, b)
    assert r0["genotype"] == r1["genotype"]
    assert r0["scores"] == r1["scores"]
    # The architecture moved, from the same start on both ranks.
    assert all(torch.equal(a, b) for a, b in zip(r0["initial"], r1["initial"]))
    assert not torch.equal(r0["state"]["alpha"], r0["initial"][0])
    # Each rank read its own half of split A, every epoch: disjoint shards (8 samples in A).
    assert len(r0["seen"]) == len(r1["seen"]) == 8
    for epoch in (slice(0, 4), slice(4, 8)):
        assert not set(r0["seen"][epoch]) & set(r1["seen"][epoch])
    # BatchNorm running statistics followed each rank's batches until rank 0's were broadcast.
    assert r0["buffers_differed"]
    # Rank 0 alone wrote the split.
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["split.json"]
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert set(r0["seen"]) <= set(split["A"])
