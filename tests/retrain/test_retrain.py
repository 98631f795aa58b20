import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest
import torch
import yaml

import autodeeplab.retrain.loop as retrain_loop
from autodeeplab import Genotype, build_model, load_model
from autodeeplab.conf_path import CONF_DIR
from autodeeplab.engine.config import to_config
from autodeeplab.evaluate.run import results_path, run_evaluate
from autodeeplab.retrain.config import RetrainConfig, check_retrain_config
from autodeeplab.retrain.loop import run_retrain

DROP = ("experiment=smoke", "model.drop_path_keep_prob=0.7")
EXPERIMENTS = sorted(
    p.stem for p in (Path(__file__).parents[2] / "experiments/retrain/experiment").glob("*.yaml")
)


@pytest.mark.parametrize(
    "overrides",
    [[f"model={m}"] for m in ("s", "m", "l", "tiny")]
    + [[f"loss={loss}"] for loss in ("ce", "ohem", "ce_dice", "focal")]
    + [["experiment=smoke"]]
    + [[f"experiment={name}", "data.root=/data/set"] for name in EXPERIMENTS],
)
def test_every_retrain_option_composes(retrain_config, overrides):
    cfg = retrain_config(*overrides)
    check_retrain_config(cfg)  # every shipped setting is in range


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.batch_size=0"], "train.batch_size=0: expected a positive number"),
        (["train.lr=-1"], "train.lr=-1.0: expected a positive number"),
        (["train.color_jitter=1.5"], r"train.color_jitter=1.5: expected a strength in \[0, 1\]"),
        (["model.drop_path_keep_prob=0"], r"model.drop_path_keep_prob=0.0: expected .* \(0, 1\]"),
        (["model.stem_channels=[8,8]"], r"model.stem_channels=\[8, 8\]: expected 3 positive"),
        (["loss=focal", "loss.focal_gamma=-1"], "loss.focal_gamma=-1.0: expected a number >= 0"),
        (["data.scale_min=2"], r"data.scale_min, data.scale_max=\(2.0, 1.0\)"),
        (["threads=0", "train.power=-1"], "train.power=-1.0: .*; threads=0: expected"),
        (["genotype=nosuch"], "nosuch"),
        (["genotype="], r"genotype is empty; pass genotype=<a genotype.json file> or .*\(paper"),
        (["seed=-1"], "seed=-1: expected an integer >= 0"),
        (["data.train_samples=0"], "data.train_samples"),
        (["+data.options.bogus=1"], "unknown option 'bogus'"),
        (["train.batch_size=64"], "fewer than train.batch_size=64"),
        (["loss.terms.lovasz=1"], r"loss.terms=\{'ce': 1.0, 'lovasz': 1.0\}: unknown loss 'lov"),
        (
            ["train.batch_size=1", "data.crop_size=16"],  # the paper's path reaches level 3
            r"data.crop_size=16 leaves a 1x1 map at level 3, .* data.crop_size >= 33",
        ),
    ],
)
def test_bad_retrain_settings_are_refused_naming_them(retrain_config, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run_retrain(retrain_config("experiment=smoke", *overrides), tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_the_smallest_crop_for_a_batch_of_one_trains(retrain_config):
    # 33 pixels leave 2x2 at level 3 (the check's bound); one fewer would leave 1x1.
    from autodeeplab.retrain.loop import RetrainInputs

    cfg = retrain_config("experiment=smoke", "train.batch_size=1", "data.crop_size=33")
    inputs = RetrainInputs.load(cfg)
    model = build_model(inputs.genotype, num_classes=5, filter_multiplier=4).train()
    assert model(torch.randn(1, 3, 33, 33))["out"].shape == (1, 5, 33, 33)


def test_paper_experiments_cover_cityscapes_voc_and_ade20k(retrain_config):
    assert {"cityscapes_s", "cityscapes_m", "cityscapes_l", "voc", "ade20k"} <= set(EXPERIMENTS)
    cfg = retrain_config("experiment=cityscapes_l", "data.root=/x")
    assert (cfg.model.filter_multiplier, cfg.data.crop_size, cfg.train.lr) == (48, 769, 0.05)
    assert (cfg.data.scale_min, cfg.data.scale_max) == (0.5, 2.0)
    for name in ("voc", "ade20k"):  # the model of the paper's figures in their READMEs
        assert retrain_config(f"experiment={name}", "data.root=/x").model.filter_multiplier == 48


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["threads=0"], "threads=0: expected a positive number or null"),
        (["scales=[]"], r"scales=\[\]: expected positive factors"),
        (["scales=[1.0,-0.5]"], r"scales=\[1.0, -0.5\]: expected positive factors"),
        (["crop_size=0", "threads=-1"], "crop_size=0: .*; threads=-1"),
        (["average=softmax"], "average='softmax': expected probabilities or logits"),
        (["data.num_workers=-1"], "data.num_workers=-1: expected 0 or more"),
    ],
)
def test_bad_evaluate_settings_are_refused_naming_them(
    evaluate_config, tmp_path, overrides, message
):
    cfg = evaluate_config(f"checkpoint={tmp_path / 'best.pt'}", *overrides)
    with pytest.raises(ValueError, match=message):
        run_evaluate(cfg)


def test_a_retrain_that_stopped_before_its_first_checkpoint_keeps_its_directory(
    retrain_config, tmp_path
):
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")  # its TensorBoard file
    with pytest.raises(FileExistsError, match="stopped before its first checkpoint"):
        run_retrain(retrain_config("experiment=smoke"), tmp_path)


def test_a_diverged_retrain_stops_naming_the_iteration_and_the_last_checkpoint(
    retrain_config, tmp_path, monkeypatch
):
    real = retrain_loop.build_loss
    calls = []

    def diverging(*args, **kwargs):  # finite for three steps, then NaN
        loss = real(*args, **kwargs)

        def forward(logits, target):
            calls.append(None)
            return loss(logits, target) * (float("nan") if len(calls) > 3 else 1.0)

        return forward

    monkeypatch.setattr(retrain_loop, "build_loss", diverging)
    cfg = retrain_config("experiment=smoke", "train.iterations=6", "train.val_every=2")
    run = tmp_path / "run"
    message = (
        "iteration 4: mean training loss nan over iterations 3-4: the retrain diverged "
        "(lower train.lr, or set train.grad_clip); the last checkpoint, "
        f"{run / 'checkpoints/last.pt'}, holds iteration 2"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        run_retrain(cfg, run)
    assert len(calls) == 4  # stopped at the validation after the first NaN
    state = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert state["step"] == 2 and state["best"]["step"] == 2
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2]
    # Before any checkpoint: says so.
    calls.clear()
    calls.extend([None] * 3)
    with pytest.raises(ValueError, match="iteration 2: .* no checkpoint was written"):
        run_retrain(cfg, tmp_path / "early")


def test_a_tie_keeps_the_earlier_best(retrain_config, tmp_path, monkeypatch):
    """Later validations must beat the best score to replace it; an equal one does not."""
    monkeypatch.setattr(
        retrain_loop, "evaluate_model", lambda *args, **kwargs: {"miou": 0.5, "pixel_acc": 0.9}
    )
    cfg = retrain_config("experiment=smoke", "train.iterations=4", "train.val_every=2")
    best = run_retrain(cfg, tmp_path / "run")
    assert best["step"] == 2
    state = torch.load(tmp_path / "run/checkpoints/best.pt", weights_only=True)
    assert state["step"] == 2 and state["best"]["step"] == 2


def test_a_val_split_without_labelled_pixels_is_refused_not_scored_as_nan(retrain_config, tmp_path):
    from PIL import Image

    root = tmp_path / "data"
    root.mkdir()
    (root / "classes.txt").write_text("road\nsky\ntree\n")
    for split, value in (("train", 1), ("val", 255)):
        for stem in ("a", "b"):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 40), (90, 120, 30)).save(root / "images" / split / f"{stem}.png")
            Image.new("L", (40, 40), value).save(root / "masks" / split / f"{stem}.png")
    cfg = retrain_config(
        "experiment=smoke",
        "data=folder",
        f"data.root={root}",
        "data.num_classes=3",
        "train.iterations=1",
        "train.val_every=1",
    )
    run = tmp_path / "run"
    refusal = "the folder val split has no labelled pixels (every mask is data.ignore_index=255)"
    with pytest.raises(ValueError, match=re.escape(refusal)):
        run_retrain(cfg, run)
    assert not (run / "checkpoints" / "best.pt").exists()
    assert not (run / "metrics.jsonl").exists()


def test_a_registered_genotype_name_is_never_read_as_a_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()  # a folder (or file) named like the default genotype
    assert retrain_loop.load_genotype("paper") == Genotype.named("paper")
    small = Genotype(cell=Genotype.named("paper").cell, path=(0, 1))
    (tmp_path / "mine.json").write_text(json.dumps(small.to_dict()))
    assert retrain_loop.load_genotype("mine.json") == small


def test_loss_terms_take_any_registered_loss_from_the_command_line(retrain_config):
    cfg = retrain_config("loss.terms={ce: 1.0, dice: 0.5}")  # the README's example
    assert cfg.loss.terms == {"ce": 1.0, "dice": 0.5}
    assert retrain_config("loss.terms.dice=1", "~loss.terms.ce").loss.terms == {"dice": 1.0}


@pytest.mark.parametrize("name", ["ce", "ohem", "ce_dice", "focal"])
def test_a_loss_group_gives_all_the_terms(retrain_config, name):
    # The group's terms replace the dataclass default {ce: 1.0} rather than adding to it.
    group = yaml.safe_load((Path(CONF_DIR) / "retrain" / "loss" / f"{name}.yaml").read_text())
    assert retrain_config(f"loss={name}").loss.terms == group["terms"]


def test_a_given_mapping_replaces_the_schema_default(retrain_config):
    given = dataclasses.asdict(retrain_config())
    given["loss"]["terms"] = {"focal": 1.0}
    assert to_config(given, RetrainConfig).loss.terms == {"focal": 1.0}
    del given["loss"]
    assert to_config(given, RetrainConfig).loss.terms == {"ce": 1.0}


def test_the_loss_options_reach_the_loss(retrain_config):
    from autodeeplab.engine.losses import focal, ohem_cross_entropy
    from autodeeplab.retrain.loop import RetrainInputs

    logits, target = torch.randn(2, 5, 16, 16), torch.randint(0, 5, (2, 16, 16))
    target[0, :4] = 255
    cases = [
        (["loss=focal", "loss.focal_gamma=0.5"], focal(logits, target, gamma=0.5)),
        (
            ["loss=ohem", "loss.ohem_thresh=0.9", "loss.ohem_min_kept=10"],
            ohem_cross_entropy(logits, target, thresh=0.9, min_kept=10),
        ),
    ]
    # The options matter on these logits: the defaults give other values.
    assert not torch.isclose(focal(logits, target), cases[0][1])
    assert not torch.isclose(ohem_cross_entropy(logits, target, min_kept=10), cases[1][1])
    for overrides, expected in cases:
        inputs = RetrainInputs.load(retrain_config("experiment=smoke", *overrides))
        torch.testing.assert_close(inputs.loss_fn(logits, target), expected)


def test_unknown_keys_are_refused(retrain_config):
    with pytest.raises(Exception, match="lerning_rate"):
        retrain_config("+train.lerning_rate=3")


@pytest.fixture(scope="module")
def smoke_retrain(retrain_config, tmp_path_factory):
    """``(run directory, best record)`` of an uninterrupted smoke retrain with TensorBoard
    (24 iterations, validations at 12 and 24): the reference of the resume tests."""
    run_dir = tmp_path_factory.mktemp("smoke_retrain")
    best = run_retrain(retrain_config("experiment=smoke", "tensorboard=true"), run_dir)
    return run_dir, best


@pytest.mark.slow
def test_smoke_retrain_writes_self_describing_checkpoints(smoke_retrain):
    run_dir, best = smoke_retrain
    for name in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.jsonl"):
        assert (run_dir / name).is_file()
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [12, 24]
    # The rate of each record's last step: poly from 0.02 over 24 steps (0 only after the end).
    expected = [0.02 * (1 - (r["step"] - 1) / 24) ** 0.9 for r in records]
    assert [r["lr"] for r in records] == pytest.approx(expected)
    assert best["miou"] == max(r["miou"] for r in records)
    state = torch.load(run_dir / "checkpoints/best.pt", weights_only=True)
    assert state["step"] == best["step"]
    model = load_model(run_dir / "checkpoints/best.pt")  # no config at hand
    assert Genotype.from_dict(state["model_args"]["genotype"]) == Genotype.named("paper")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    x = torch.randn(1, 3, 33, 47)
    assert model(x)["out"].shape == (1, 5, 33, 47)


@pytest.mark.slow
def test_gradient_clipping_bounds_the_retrain_step(retrain_config, tmp_path):
    # With a tiny clip norm one step hardly moves the weights, whatever the rate: two runs
    # whose rates differ end (almost) where they started, so (almost) on each other.
    one_step = ("experiment=smoke", "train.iterations=1", "train.val_every=1")
    one_step += ("train.weight_decay=0",)  # the decay's step grows with the rate
    weights = []
    for name, lr in (("a", 0.02), ("b", 0.04), ("c", 0.04)):
        clip = ["train.grad_clip=1e-9"] if name != "c" else []
        run_retrain(retrain_config(*one_step, f"train.lr={lr}", *clip), tmp_path / name)
        state = torch.load(tmp_path / name / "checkpoints/last.pt", weights_only=True)
        weights.append(torch.cat([t.flatten() for k, t in state["model"].items() if "conv" in k]))
    clipped_a, clipped_b, unclipped = weights
    assert (clipped_a - clipped_b).abs().max() < 1e-7  # float32 rounding of the weights
    assert (unclipped - clipped_b).abs().max() > 1e-4  # without the clip the rate shows


@pytest.mark.slow
def test_resume_after_a_crash_matches_an_uninterrupted_run(retrain_config, tmp_path, monkeypatch):
    # Drop Path on: its masks come from the global generator, which resume must restore.
    run_retrain(retrain_config(*DROP), tmp_path / "full")
    calls = []
    real_evaluate = retrain_loop.evaluate_model

    def crash_on_second_validation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run dies after its first checkpoint
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(retrain_loop, "evaluate_model", crash_on_second_validation)
    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(*DROP), tmp_path / "crashed")
    monkeypatch.setattr(retrain_loop, "evaluate_model", real_evaluate)
    assert torch.load(tmp_path / "crashed/checkpoints/last.pt", weights_only=True)["step"] == 12
    run_retrain(retrain_config(*DROP, "resume=true"), tmp_path / "crashed")
    full = torch.load(tmp_path / "full/checkpoints/last.pt", weights_only=True)
    resumed = torch.load(tmp_path / "crashed/checkpoints/last.pt", weights_only=True)
    assert full["step"] == resumed["step"] == 24
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, resumed["model"][name]), name
    assert [r["miou"] for r in full["records"]] == [r["miou"] for r in resumed["records"]]


def _each_validation_a_new_best(monkeypatch):
    """Make every validation of the test score a new best: an mIoU of 1e-3 times its number,
    counted across the test's runs (whether a few smoke steps improve the real score depends
    on the machine's float rounding). A resumed run's repeated validation thus beats the lost
    run's; the case where it does not is the test that lowers the lost run's score."""
    calls = []
    real_evaluate = retrain_loop.evaluate_model

    def improving(*args, **kwargs):
        calls.append(1)
        scores = dict(real_evaluate(*args, **kwargs))
        scores["miou"] = 1e-3 * len(calls)
        return scores

    monkeypatch.setattr(retrain_loop, "evaluate_model", improving)


@pytest.mark.slow
@pytest.mark.parametrize("killed_at", ["best.pt", "last.pt"])
def test_best_checkpoint_survives_a_crash_between_the_checkpoint_writes(
    retrain_config, tmp_path, monkeypatch, killed_at
):
    real_save = retrain_loop.save_checkpoint
    _each_validation_a_new_best(monkeypatch)

    def crash_while_saving(state, path):
        if state["step"] == 24 and Path(path).name == killed_at:
            raise KeyboardInterrupt  # killed while writing the second validation's checkpoints
        real_save(state, path)

    monkeypatch.setattr(retrain_loop, "save_checkpoint", crash_while_saving)
    with pytest.raises(KeyboardInterrupt):  # the second validation is a new best
        run_retrain(retrain_config("experiment=smoke"), tmp_path)
    monkeypatch.setattr(retrain_loop, "save_checkpoint", real_save)
    best = run_retrain(retrain_config("experiment=smoke", "resume=true"), tmp_path)
    assert best["step"] == 24
    saved = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert saved["step"] == best["step"]
    assert saved["best"]["miou"] == best["miou"]


def test_resume_with_other_settings_and_bad_genotypes_are_refused(retrain_config, tmp_path):
    run_retrain(retrain_config("experiment=smoke"), tmp_path / "run")
    with pytest.raises(ValueError, match="train.lr: 0.02 -> 0.1"):
        run_retrain(
            retrain_config("experiment=smoke", "resume=true", "train.lr=0.1"), tmp_path / "run"
        )
    with pytest.raises(FileExistsError, match="already holds a run"):
        run_retrain(retrain_config("experiment=smoke"), tmp_path / "run")
    with pytest.raises(ValueError, match="nope.json"):
        run_retrain(retrain_config("experiment=smoke", "genotype=nope.json"), tmp_path / "r2")
    with pytest.raises(ValueError, match="neither a genotype file nor a name"):
        run_retrain(retrain_config("experiment=smoke", "genotype=papr"), tmp_path / "r3")


def test_resume_refuses_a_genotype_file_that_changed(retrain_config, tmp_path):
    genotype_file = tmp_path / "g.json"
    Genotype.named("paper").to_json(genotype_file)
    one_step = ("experiment=smoke", f"genotype={genotype_file}", "train.iterations=1")
    run_retrain(retrain_config(*one_step, "train.val_every=1"), tmp_path / "run")
    text = genotype_file.read_text()
    assert "max_pool_3x3" not in text
    genotype_file.write_text(text.replace("sep_conv_3x3", "max_pool_3x3", 1))
    before = (tmp_path / "run/checkpoints/last.pt").read_bytes()
    resume = retrain_config(*one_step, "train.val_every=1", "resume=true")

    def on_start():  # the CLI records the command here: never for a refused resume
        pytest.fail("on_start ran before the refusal")

    with pytest.raises(ValueError, match=r"g.json now describes another architecture .*block\d+ "):
        run_retrain(resume, tmp_path / "run", on_start=on_start)
    assert (tmp_path / "run/checkpoints/last.pt").read_bytes() == before


@pytest.mark.slow
def test_evaluate_writes_results_once(retrain_config, evaluate_config, tmp_path):
    run_retrain(retrain_config("experiment=smoke"), tmp_path)
    checkpoint = tmp_path / "checkpoints/best.pt"
    cfg = evaluate_config("experiment=smoke", f"checkpoint={checkpoint}")
    result = run_evaluate(cfg)
    out = results_path(cfg)
    assert out == tmp_path / "eval_best_val_first4_ms0.75-1-1.25_flip.json"  # smoke: 4 images
    saved = json.loads(out.read_text())
    assert saved["miou"] == result["miou"] and set(saved["per_class"]) == {
        "brick",
        "grass",
        "gravel",
        "moon",
        "immunohistochemistry",
    }
    assert saved["scales"] == [0.75, 1.0, 1.25] and saved["flip"] is True
    assert saved["average"] == "probabilities"
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_evaluate(cfg)
    single = run_evaluate(
        evaluate_config(
            "experiment=smoke", f"checkpoint={checkpoint}", "scales=[1.0]", "flip=false"
        )
    )
    assert 0.0 <= single["miou"] <= 1.0
    hint = "predicts 5 classes.*trained on data=textures data.num_classes=5: pass"
    with pytest.raises(ValueError, match=hint):
        run_evaluate(
            evaluate_config(
                f"checkpoint={checkpoint}",
                "data.num_classes=4",
                "data.options.num_classes=4",
                "out=" + str(tmp_path / "x.json"),
            )
        )
    # Where the result cannot go is found before the evaluation, not after it.
    with pytest.raises(IsADirectoryError, match="is a folder; expected the path of a JSON file"):
        run_evaluate(evaluate_config(f"checkpoint={checkpoint}", f"out={tmp_path}"))
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError, match="cannot make the folder of .*file/x.json"):
        run_evaluate(evaluate_config(f"checkpoint={checkpoint}", f"out={tmp_path}/file/x.json"))


def test_evaluations_with_other_inference_settings_get_other_files(evaluate_config, tmp_path):
    checkpoint = f"checkpoint={tmp_path / 'checkpoints' / 'best.pt'}"
    names = {
        results_path(evaluate_config(checkpoint, *overrides)).name
        for overrides in (
            ["scales=[1.0]", "flip=false"],
            ["scales=[1.0]", "flip=false", "crop_size=769"],
            ["scales=[0.5,1.0,2.0]", "flip=true"],
            ["scales=[0.75,1.0,1.25]", "flip=true"],
            ["scales=[0.75,1.0,1.25]", "flip=true", "average=logits"],
            ["scales=[1.0]", "flip=true", "average=logits"],
            ["scales=[1.0]", "flip=false", "average=logits"],  # one pass: nothing to average
            ["scales=[1.0]", "flip=false", "split=test"],
        )
    }
    assert names == {
        "eval_best_val.json",
        "eval_best_val_crop769.json",
        "eval_best_val_ms0.5-1-2_flip.json",
        "eval_best_val_ms0.75-1-1.25_flip.json",
        "eval_best_val_ms0.75-1-1.25_flip_logits.json",
        "eval_best_val_flip_logits.json",
        "eval_best_test.json",
    }
    limited = evaluate_config(checkpoint, "data.val_samples=10", "scales=[1.0]", "flip=false")
    assert results_path(limited).name == "eval_best_val_first10.json"


def test_a_split_without_labels_is_refused_not_scored_as_nulls(evaluate_config, tmp_path):
    from PIL import Image

    # A folder dataset whose test split has images but no masks, and a 3-class model.
    root = tmp_path / "data"
    (root / "classes.txt").parent.mkdir()
    (root / "classes.txt").write_text("road\nsky\ntree\n")
    for split in ("test", "val"):
        (root / "images" / split).mkdir(parents=True)
        Image.new("RGB", (33, 33), (90, 120, 30)).save(root / "images" / split / "a.png")
    (root / "masks" / "val").mkdir(parents=True)
    Image.new("L", (33, 33), 255).save(root / "masks" / "val" / "a.png")  # all ignored
    args = {"genotype": "paper", "num_classes": 3, "filter_multiplier": 4}
    model = build_model(**args)
    checkpoint = tmp_path / "model.pt"
    torch.save({"model_args": args, "model": model.state_dict()}, checkpoint)
    common = (f"checkpoint={checkpoint}", "data=folder", f"data.root={root}")
    common += ("data.num_classes=3", "scales=[1.0]", "flip=false")
    with pytest.raises(ValueError, match="folder split 'test' has no labels \\(no mask files\\)"):
        run_evaluate(evaluate_config(*common, "split=test"))
    with pytest.raises(ValueError, match="every mask pixel is data.ignore_index=255, so nothing"):
        run_evaluate(evaluate_config(*common, "split=val"))
    assert not list(tmp_path.glob("eval_*.json"))  # no file of nulls


def test_evaluate_names_the_training_keys_it_does_not_read():
    from autodeeplab.evaluate.config import unread_overrides

    overrides = ["data.crop_size=769", "+data.flip=true", "data.root=x", "crop_size=513"]
    overrides += ["data.val_samples=10", "data.train_samples=4", "flip=true"]
    assert unread_overrides(overrides, "val") == [
        "data.crop_size is not read by evaluate: the training crop; sliding-window inference "
        "takes crop_size=<size>",
        "data.flip is not read by evaluate: training augmentation; flip=true averages in "
        "mirrored passes",
        "data.train_samples is not read by evaluate: evaluate scores the whole split; "
        "data.val_samples limits split=val",
    ]
    assert unread_overrides(["data.val_samples=10"], "test") == [
        "data.val_samples limits split=val only; split=test is scored whole"
    ]


def test_colour_jitter_is_applied_before_normalisation():
    from autodeeplab.data.config import DataConfig
    from autodeeplab.data.transforms import ColorJitter, Normalize
    from autodeeplab.retrain.loop import train_transform

    data = DataConfig(name="textures", root=None, num_classes=5, crop_size=16)
    steps = train_transform(data, 0.3).transforms
    assert isinstance(steps[-2], ColorJitter) and isinstance(steps[-1], Normalize)
    assert not any(isinstance(t, ColorJitter) for t in train_transform(data, 0.0).transforms)


def _scalars(run_dir):
    """TensorBoard's scalars in ``run_dir`` as it shows them: ``{tag: [(step, value)]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("killed_in", ["evaluate_model", "log_validation", "write_metrics"])
def test_resume_writes_the_same_metrics_and_tensorboard_entries(
    retrain_config, smoke_retrain, tmp_path, monkeypatch, killed_in
):
    # Killed in the second (last) validation: before its checkpoint (the run resumes from the
    # first one, whose TensorBoard entries the resume hides), or after it (nothing is left to
    # run, but metrics.jsonl and TensorBoard lack the validation).
    settings = ("experiment=smoke", "tensorboard=true")  # those of smoke_retrain
    full_run, _ = smoke_retrain
    real = getattr(retrain_loop, killed_in)
    calls = []

    def killed(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(retrain_loop, killed_in, killed)
    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config(*settings), tmp_path / "crashed")
    monkeypatch.setattr(retrain_loop, killed_in, real)
    assert len(_metrics(tmp_path / "crashed")) == 1
    run_retrain(retrain_config(*settings, "resume=true"), tmp_path / "crashed")

    full, resumed = _metrics(full_run), _metrics(tmp_path / "crashed")
    assert [r["step"] for r in resumed] == [12, 24]
    times = [r["seconds"] for r in resumed]
    assert 0 < times[0] <= times[1]  # the training time of both runs

    def measured_alike(records):  # not the time and memory, which differ between runs
        return [
            {k: v for k, v in r.items() if k not in ("seconds", "peak_memory_mib")} for r in records
        ]

    assert measured_alike(full) == measured_alike(resumed)
    expected = _scalars(full_run)
    assert set(expected) == {"loss/train", "val/miou", "val/pixel_acc", "lr"}
    assert [s for s, _ in expected["loss/train"]] == list(range(1, 25))
    assert _scalars(tmp_path / "crashed") == expected


@pytest.mark.slow
def test_a_best_checkpoint_of_the_lost_run_stays_the_best_until_beaten(
    retrain_config, tmp_path, monkeypatch, caplog
):
    # Killed between the writes of a new best.pt and last.pt; the repeated steps then score
    # lower than the lost run did (as nondeterministic kernels may): best.pt must keep the
    # lost run's model, and the run's best must say so.
    real_save = retrain_loop.save_checkpoint
    _each_validation_a_new_best(monkeypatch)

    def crash_before_last(state, path):
        if state["step"] == 24 and Path(path).name == "last.pt":
            raise KeyboardInterrupt
        real_save(state, path)

    monkeypatch.setattr(retrain_loop, "save_checkpoint", crash_before_last)
    with pytest.raises(KeyboardInterrupt):
        run_retrain(retrain_config("experiment=smoke"), tmp_path)
    monkeypatch.setattr(retrain_loop, "save_checkpoint", real_save)
    lost = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert lost["step"] == lost["best"]["step"] == 24
    lost["best"]["miou"] = 0.99  # the lost run scored higher than the repeated step will
    real_save(lost, tmp_path / "checkpoints/best.pt")

    best = run_retrain(retrain_config("experiment=smoke", "resume=true"), tmp_path)
    assert best == lost["best"]
    saved = torch.load(tmp_path / "checkpoints/best.pt", weights_only=True)
    assert saved["best"] == lost["best"]
    for name, tensor in lost["model"].items():
        assert torch.equal(saved["model"][name], tensor), name
    assert "does not record as the best" in caplog.text


@pytest.mark.parametrize("deterministic", [False, True])
def test_the_retrain_runs_with_deterministic_algorithms_as_configured(
    retrain_config, tmp_path, monkeypatch, deterministic
):
    seen, real_evaluate = [], retrain_loop.evaluate_model

    def recording(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(retrain_loop, "evaluate_model", recording)
    overrides = ("experiment=smoke", "train.iterations=2", f"train.deterministic={deterministic}")
    run_retrain(retrain_config(*overrides), tmp_path / "run")
    assert seen == [deterministic]  # one validation, at the end
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the retrain


def test_the_retrain_says_where_it_goes_and_on_what_before_it_trains(
    retrain_config, tmp_path, caplog
):
    cfg = retrain_config("experiment=smoke", "train.iterations=1", "train.val_every=1")
    with caplog.at_level(logging.INFO, logger="autodeeplab.retrain"):
        run_retrain(cfg, tmp_path / "run")
    lines = [r.getMessage() for r in caplog.records]
    opening = (
        f"retrain in {tmp_path / 'run'} on cpu: textures data, {cfg.data.train_samples} "
        f"training and {cfg.data.val_samples} validation images; train.iterations=1 of batch "
        f"{cfg.train.batch_size}; a model of "
    )
    assert lines[0].startswith(opening), lines[0]
    assert lines[1].startswith("iteration 1/1:")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_a_deterministic_gpu_retrain_repeats_bit_for_bit(retrain_config, tmp_path):
    # Drop Path on, so its masks (from the global generator) are part of what repeats.
    overrides = (*DROP, "device=cuda", "train.deterministic=true")
    for run in ("a", "b"):
        run_retrain(retrain_config(*overrides), tmp_path / run)
    a = torch.load(tmp_path / "a/checkpoints/last.pt", weights_only=True)
    b = torch.load(tmp_path / "b/checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 24
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


def test_resuming_a_complete_retrain_writes_nothing_and_returns_its_best(
    retrain_config, tmp_path, caplog
):
    settings = ("experiment=smoke", "train.iterations=2", "train.val_every=1", "tensorboard=true")
    run = tmp_path / "run"
    best = run_retrain(retrain_config(*settings), run)
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    times = {p: p.stat().st_mtime_ns for p in files}

    def on_start():  # the CLI records the command here (resume_N_overrides.yaml)
        pytest.fail("on_start ran for a complete run")

    with caplog.at_level(logging.INFO, logger="autodeeplab.retrain"):
        again = run_retrain(retrain_config(*settings, "resume=true"), run, on_start=on_start)
    assert again == best and again["step"] in (1, 2)
    assert f"{run} holds a complete retrain (iteration 2 of 2): nothing to do" in caplog.text
    assert {p for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == set(files)
    assert all(p.read_bytes() == files[p] and p.stat().st_mtime_ns == times[p] for p in files)
    # Killed between the last checkpoint and metrics.jsonl: the resume brings it up to date.
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    started = []
    run_retrain(retrain_config(*settings, "resume=true"), run, on_start=lambda: started.append(1))
    assert started == [1] and metrics.read_bytes() == files[metrics]
