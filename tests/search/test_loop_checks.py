"""Bad settings stop a search before any work, with messages that name the setting."""

import logging

import pytest
import torch
from hydra import compose, initialize_config_dir

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.engine.config import store_schema
from autodeeplab.engine.rundir import lock_run_dir
from autodeeplab.search.config import SearchConfig, to_search_config
from autodeeplab.search.loop import run_search

store_schema("search_schema", SearchConfig)


def _smoke(*overrides):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(
            "search",
            overrides=["experiment=smoke", "progress=false", "tensorboard=false", *overrides],
        )
    return to_search_config(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["data.ignore_index=254"], "marks ignored pixels with 255; set data.ignore_index=255"),
        (
            ["data.num_classes=3", "data.options.num_classes=4"],
            "data.num_classes=3 but dataset 'textures' has 4 classes; set data.num_classes=4",
        ),
        (
            ["data.train_samples=1"],
            r"the training split has 1 sample \(data.train_samples=1\); the search needs at "
            "least 2, for its halves A",
        ),
        (["device=gpu"], r"device='gpu' is not a device name; expected auto, cpu, cuda or"),
        (["data.train_samples=3"], "split B has 1 samples, fewer than search.batch_size=2"),
        (["search.max_steps=0"], "search.max_steps=0"),
        (["search.epochs=0"], "search.epochs=0"),
        (["search.precision=fp16"], r"search.precision='fp16': expected one of \['bf16', 'fp32'\]"),
        (["search.batch_size=0"], "search.batch_size=0: expected a positive number"),
        (["search.eval_batch_size=0"], "search.eval_batch_size=0: expected a positive number"),
        (["space.partial_channels=3"], "space.partial_channels=3: expected a positive divisor"),
        (["space.layers=0"], "space.layers=0"),
        (["space.stem_channels=[8,8]"], r"space.stem_channels=\[8, 8\]: expected 3 positive"),
        (["optim.lr=-1"], "optim.lr=-1.0: expected a positive number"),
        (["optim.arch_betas=[0.9]"], r"optim.arch_betas=\[0.9\]: expected two numbers"),
        (["data.crop_size=0"], "data.crop_size=0"),
        (["threads=0"], "threads=0: expected a positive number or null"),
        (["seed=-1"], "seed=-1: expected an integer >= 0"),
        (
            ["search.cuda_graphs=true", "device=cpu"],
            "search.cuda_graphs=true needs a CUDA device; device='cpu' is cpu",
        ),
        (
            ["space=default", "search.batch_size=1"],  # 32-pixel crops: 1x1 at level 3
            r"data.crop_size=32 leaves a 1x1 map at level 3, .* data.crop_size >= 33",
        ),
        (["optim.lr=0", "search.eval_batch_size=0"], "optim.lr=0.0.*; search.eval_batch_size=0"),
        (["+data.options.colour=1"], "unknown option 'colour'"),
        (["data.options.image_size=abc"], "data.options.image_size='abc': .* expects int"),
        (["data.options.image_size=64.5"], "data.options.image_size=64.5: .* expects int"),
        pytest.param(
            ["device=cuda:7"],
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
)
def test_bad_settings_are_refused(tmp_path, overrides, message):
    def record_config():  # as the command line does once the directory is checked
        (tmp_path / "run" / ".hydra").mkdir()
        (tmp_path / "run" / ".hydra" / "config.yaml").write_text("{}\n")

    with pytest.raises(ValueError, match=message):
        run_search(_smoke(*overrides), tmp_path / "run", on_start=record_config)
    # Refused before the run directory is made: the same directory takes the corrected run.
    assert not (tmp_path / "run").exists()


def test_two_searches_never_share_a_run_directory(tmp_path):
    with lock_run_dir(tmp_path):
        with pytest.raises(FileExistsError, match="another run is using"):
            run_search(_smoke(), tmp_path)
    assert not (tmp_path / "split.json").exists()


def test_smoke_search_runs_on_a_users_folder_with_images_of_different_sizes(tmp_path):
    import numpy as np
    from PIL import Image

    root = tmp_path / "data"
    (root / "classes.txt").parent.mkdir(parents=True)
    (root / "classes.txt").write_text("sky\nroad\ntree\n")
    rng = np.random.default_rng(0)
    sizes = {"train": [(40, 48)] * 6, "val": [(36, 44), (40, 52)]}
    for split, shapes in sizes.items():
        for i, (h, w) in enumerate(shapes):
            for folder in ("images", "masks"):
                (root / folder / split).mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "images" / split / f"{i}.png")
            labels = rng.integers(0, 3, (h, w), dtype=np.uint8)
            labels[0] = 255  # ignored pixels
            Image.fromarray(labels).save(root / "masks" / split / f"{i}.png")
    cfg = _smoke("data=folder", f"data.root={root}", "data.num_classes=3", "search.epochs=2")
    genotype = run_search(cfg, tmp_path / "run")
    assert len(genotype.path) == 3
    assert (tmp_path / "run" / "genotypes" / "epoch_002.json").is_file()


def test_a_search_diverging_before_its_architecture_steps_names_no_architecture_loss(tmp_path):
    cfg = _smoke("optim.lr=1e12", "optim.grad_clip=null")  # arch steps from epoch 2
    with pytest.raises(ValueError, match="epoch 1: mean weight loss (nan|inf), no architecture"):
        run_search(cfg, tmp_path / "run")


def test_a_diverging_search_stops_with_an_error_instead_of_a_genotype(tmp_path):
    cfg = _smoke(
        "optim.lr=1e12", "optim.grad_clip=null", "optim.arch_lr=1e12", "search.arch_start_epoch=0"
    )
    with pytest.raises(
        ValueError, match="epoch 1: mean weight loss (nan|inf).*the search diverged"
    ):
        run_search(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "genotype.json").exists()


def test_steps_per_epoch_and_learning_rates_follow_the_config(tmp_path, monkeypatch):
    import json
    import math

    import autodeeplab.search.loop as search_loop

    calls = {"weight": 0, "arch": 0}

    def counting(name, step):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return step(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(search_loop, "weight_step", counting("weight", search_loop.weight_step))
    monkeypatch.setattr(search_loop, "arch_step", counting("arch", search_loop.arch_step))
    cfg = _smoke("search.epochs=3", "search.max_steps=2", "optim.lr=0.05", "optim.lr_min=0.01")
    run_search(cfg, tmp_path / "run")
    # Split A has 8 samples, 4 batches of 2, capped at 2 per epoch; arch steps after epoch 1.
    assert calls == {"weight": 3 * 2, "arch": 2 * 2}
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # Cosine from lr towards lr_min over the epochs, stepped once per epoch.
    expected = [0.01 + 0.04 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert [r["lr"] for r in records] == pytest.approx(expected)


def test_weight_steps_train_on_split_a_and_architecture_steps_on_split_b(tmp_path, monkeypatch):
    """The bilevel alternation [P §3.3]: each step sees its own half's batches, in order."""
    import itertools

    import autodeeplab.search.loop as search_loop

    seen = {"weight": [], "arch": [], "epochs": []}

    def recording(name, step):
        def wrapped(net, opt, images, target, **kwargs):
            seen[name].append(images.clone())
            return step(net, opt, images, target, **kwargs)

        return wrapped

    def train_epoch(net, opt, data, cfg, epoch, device, *args, **kwargs):
        seen["epochs"].append((data, epoch))
        return real_train_epoch(net, opt, data, cfg, epoch, device, *args, **kwargs)

    real_train_epoch = search_loop.train_epoch
    monkeypatch.setattr(search_loop, "weight_step", recording("weight", search_loop.weight_step))
    monkeypatch.setattr(search_loop, "arch_step", recording("arch", search_loop.arch_step))
    monkeypatch.setattr(search_loop, "train_epoch", train_epoch)
    cfg = _smoke("search.epochs=2", "search.max_steps=3")
    run_search(cfg, tmp_path / "run")
    batch = cfg.search.batch_size
    expected_a, expected_b = [], []
    for data, epoch in seen["epochs"]:
        loader_a = data.loader(data.split_a, batch, seed=cfg.seed, epoch=epoch)
        expected_a += [images for images, _ in itertools.islice(loader_a, 3)]
        if epoch > cfg.search.arch_start_epoch:
            expected_b += [
                images for images, _ in itertools.islice(data.batches_b(batch, epoch), 3)
            ]
    assert len(seen["weight"]) == 6 and len(seen["arch"]) == 3
    for got, expected in zip(seen["weight"] + seen["arch"], expected_a + expected_b, strict=True):
        assert torch.equal(got, expected)
    # The halves differ: no architecture batch is the weight batch before it.
    for images_a, images_b in zip(seen["weight"][3:], seen["arch"], strict=True):
        assert not torch.equal(images_a, images_b)


def test_the_optimisers_take_every_setting():
    from autodeeplab.search.loop import Optimisers
    from autodeeplab.space.supernet import build_supernet

    cfg = _smoke(
        "optim.lr=0.05",
        "optim.momentum=0.8",
        "optim.weight_decay=1e-3",
        "optim.arch_lr=0.002",
        "optim.arch_betas=[0.5,0.99]",
        "optim.arch_weight_decay=2e-3",
    )
    net = build_supernet(num_classes=5, layers=2, filter_multiplier=4, blocks=2, levels=2)
    opt = Optimisers.build(net, cfg)
    (weights,), (arch,) = opt.weights.param_groups, opt.arch.param_groups
    assert (weights["lr"], weights["momentum"], weights["weight_decay"]) == (0.05, 0.8, 1e-3)
    assert (arch["lr"], arch["betas"], arch["weight_decay"]) == (0.002, (0.5, 0.99), 2e-3)
    assert {id(p) for p in weights["params"]} == {id(p) for p in net.weight_parameters()}
    assert {id(p) for p in arch["params"]} == {id(p) for p in net.arch_parameters()}


def test_resume_names_a_missing_or_outgrown_split_and_missing_checkpoint_keys(tmp_path):
    import json

    run = tmp_path / "run"
    run_search(_smoke("search.epochs=1"), run)
    split = run / "split.json"
    kept = split.read_text()
    split.unlink()
    resume = _smoke("search.epochs=1", "resume=true")

    def on_start():  # the CLI records the command here: never for a refused resume
        pytest.fail("on_start ran before the refusal")

    with pytest.raises(FileNotFoundError, match="split.json is missing: a resumed search reads"):
        run_search(resume, run, on_start=on_start)
    # As if data.root now held fewer images than when the run began.
    payload = json.loads(kept)
    payload["B"][-1] = 100
    split.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"split.json assigns training samples \[100\], but the"):
        run_search(resume, run, on_start=on_start)
    payload = json.loads(kept)
    payload["A"], payload["B"] = payload["B"], payload["A"]
    split.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="split.json does not match the checkpoint's split"):
        run_search(resume, run, on_start=on_start)
    split.write_text(kept)
    state = torch.load(run / "checkpoints/last.pt", weights_only=False)
    del state["genotype"]
    torch.save(state, run / "checkpoints/last.pt")
    with pytest.raises(ValueError, match=r"last.pt lacks keys \['genotype'\]"):
        run_search(_smoke("search.epochs=1", "resume=true"), run)


def test_more_levels_than_the_retrain_builds_are_searched_with_a_warning(tmp_path, caplog):
    cfg = _smoke("space.levels=5", "space.layers=2", "search.epochs=1")
    with caplog.at_level(logging.WARNING, logger="autodeeplab.search"):
        genotype = run_search(cfg, tmp_path / "run")
    assert "space.levels=5: a path that reaches level 4 or beyond (output stride 64)" in caplog.text
    assert "builds levels 0..3" in caplog.text
    assert len(genotype.path) == 2 and max(genotype.path) <= 2
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="autodeeplab.search"):
        run_search(_smoke("search.epochs=1"), tmp_path / "four")
    assert "space.levels" not in caplog.text


def test_the_search_says_where_it_goes_and_on_what_before_its_first_epoch(tmp_path, caplog):
    cfg = _smoke("search.epochs=1")
    with caplog.at_level(logging.INFO, logger="autodeeplab.search"):
        run_search(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    half = cfg.data.train_samples // 2
    assert lines[0] == (
        f"search in {tmp_path / 'run'} on cpu: textures data, split A {half} and B {half} "
        f"images, {cfg.data.val_samples} held out; search.epochs=1, architecture steps after epoch "
        f"{cfg.search.arch_start_epoch}"
    )
    assert lines[1].startswith("epoch 1/1:")


@pytest.mark.parametrize("deterministic", [False, True])
def test_the_search_runs_with_deterministic_algorithms_as_configured(
    tmp_path, monkeypatch, deterministic
):
    import autodeeplab.search.loop as search_loop

    seen, step = [], search_loop.weight_step

    def recording(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return step(*args, **kwargs)

    monkeypatch.setattr(search_loop, "weight_step", recording)
    cfg = _smoke("search.epochs=1", "search.max_steps=1", f"search.deterministic={deterministic}")
    run_search(cfg, tmp_path / "run")
    assert seen == [deterministic]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the search


def test_resuming_a_complete_search_writes_nothing_and_returns_its_genotype(tmp_path, caplog):
    run = tmp_path / "run"
    genotype = run_search(_smoke("search.epochs=1", "tensorboard=true"), run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    times = {p: p.stat().st_mtime_ns for p in files}

    def on_start():  # the CLI records the command here (resume_N_overrides.yaml)
        pytest.fail("on_start ran for a complete run")

    resume = _smoke("search.epochs=1", "tensorboard=true", "resume=true")
    with caplog.at_level(logging.INFO, logger="autodeeplab.search"):
        again = run_search(resume, run, on_start=on_start)
    assert again.to_dict() == genotype.to_dict()
    assert f"{run} holds a complete search (epoch 1 of 1): nothing to do" in caplog.text
    now = {p for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert now == set(files)
    assert all(p.read_bytes() == files[p] and p.stat().st_mtime_ns == times[p] for p in files)
    # Killed between the last checkpoint and genotype.json: the resume finishes the run.
    (run / "genotype.json").unlink()
    started = []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autodeeplab.search"):
        again = run_search(resume, run, on_start=lambda: started.append(True))
    assert started == [True] and "nothing to do" not in caplog.text
    assert (run / "genotype.json").read_bytes() == files[run / "genotype.json"]
