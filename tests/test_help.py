"""Each stage's ``--help`` lists the config groups that stage composes, and only options that
compose (Hydra's own listing showed the other stages' folders in the search's help and left
``data`` out of the others')."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

import autodeeplab.data.__main__  # noqa: F401  (stores the stages' config schemas)
import autodeeplab.evaluate.__main__  # noqa: F401
import autodeeplab.export.__main__  # noqa: F401
import autodeeplab.retrain.__main__  # noqa: F401
import autodeeplab.search.__main__  # noqa: F401
from autodeeplab.conf_path import CONF_DIR, EXPERIMENTS_DIR, stage_search_path

# module arguments, config folder, config name, the stage's own folders beside it
STAGES = {
    "search": (["autodeeplab.search"], CONF_DIR, "search", []),
    "check": (["autodeeplab.data", "check"], CONF_DIR, "check", []),
    "retrain": (
        ["autodeeplab.retrain"],
        f"{CONF_DIR}/retrain",
        "retrain",
        [f"{EXPERIMENTS_DIR}/retrain"],
    ),
    "evaluate": (["autodeeplab.evaluate"], f"{CONF_DIR}/evaluate", "evaluate", []),
    "export": (["autodeeplab.export"], f"{CONF_DIR}/export", "export", []),
}


def _search_path(stage):
    _, config_dir, _, extra = STAGES[stage]
    return [] if config_dir == CONF_DIR else [stage_search_path(CONF_DIR, *extra)]


def _listed_groups(stage, tmp_path):
    module, *_ = STAGES[stage]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", *module, "--help"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout
    assert text.startswith(f"python -m {' '.join(module)} [group=option ...]"), text[:200]
    block = text.split("(group=option)\n", 1)[1].split("== Config ==", 1)[0]
    listed = {}
    for line in block.strip().splitlines():
        group, options = line.split(": ", 1)
        listed[group] = options.split(", ")
    return listed, text


def _defaults_groups(stage):
    """The groups of the stage's defaults list, read from its YAML."""
    _, config_dir, name, _ = STAGES[stage]
    defaults = yaml.safe_load(Path(config_dir, f"{name}.yaml").read_text())["defaults"]
    return sorted(
        key for entry in defaults if isinstance(entry, dict) for key in entry
        if not key.startswith("override ")
    )  # fmt: skip


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_help_lists_the_stage_groups_and_options_that_compose(stage, tmp_path):
    listed, text = _listed_groups(stage, tmp_path)
    assert sorted(listed) == _defaults_groups(stage)
    _, config_dir, name, extra = STAGES[stage]
    for group, options in listed.items():
        own = [Path(folder, group) for folder in [config_dir, *extra]]
        own = [folder for folder in own if folder.is_dir()] or [Path(CONF_DIR, group)]
        expected = {file.stem for folder in own for file in folder.glob("*.yaml")}
        assert set(options) == expected, (group, options)
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            for option in options:
                compose(name, overrides=[f"{group}={option}", *_search_path(stage)])
    assert "Every key is documented in autodeeplab/" in text


def test_help_of_the_search_leaves_out_the_other_stages(tmp_path):
    listed, _ = _listed_groups("search", tmp_path)
    assert listed["experiment"] == ["cityscapes_paper", "smoke"]
    assert not {"retrain", "evaluate", "export", "retrain/loss"} & set(listed)
    retrain, _ = _listed_groups("retrain", tmp_path)
    assert "cityscapes_paper" not in retrain["experiment"]  # a search experiment
    assert retrain["data"] == listed["data"]


@pytest.mark.parametrize(
    ("stage", "typo", "message"),
    [
        ("search", "search.epoch=4", "'search.epoch' (did you mean 'search.epochs'?)"),
        ("retrain", "train.iteration=10", "'train.iteration' (did you mean 'train.iterations'?)"),
        ("evaluate", "chekpoint=x.pt", "'chekpoint' (did you mean 'checkpoint'?)"),
        ("export", "~tolerence", "'tolerence' (did you mean 'tolerance'?)"),
    ],
)
def test_a_misspelt_key_is_refused_naming_the_closest_one(stage, typo, message, tmp_path):
    # Before Hydra composes the config: its own message would suggest adding the key (+key).
    module = STAGES[stage][0]
    result = subprocess.run(
        [sys.executable, "-m", *module, "experiment=smoke", typo, f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 2
    # On the console log, stdout, as the stages' other refusals; no hint to add the key (+key).
    assert f"[autodeeplab.{stage}][ERROR] - unknown config key {message}" in result.stdout
    assert "+" not in result.stdout + result.stderr
    assert not (tmp_path / "run").exists()
