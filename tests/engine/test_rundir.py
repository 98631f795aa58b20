from pathlib import Path

import pytest

from autodeeplab.engine.checkpoint import save_checkpoint
from autodeeplab.engine.rundir import CHECKPOINT, check_resume_config, check_run_dir

SAVED = {
    "seed": 0,
    "threads": 1,
    "data": {"name": "cityscapes", "root": "/scratch/a", "num_workers": 4, "crop_size": 321},
    "train": {"lr": 0.05},
}


def _with(**changes):
    config = {
        key: dict(value) if isinstance(value, dict) else value for key, value in SAVED.items()
    }
    for dotted, value in changes.items():
        group, _, key = dotted.partition("__")
        if key:
            config[group][key] = value
        else:
            config[group] = value
    return config


def test_runtime_settings_may_change_on_resume():
    changed = _with(threads=2, data__root="/scratch/b", data__num_workers=0)
    check_resume_config(changed, SAVED, Path("run/checkpoints/last.pt"))


def test_a_run_saved_with_a_retired_setting_resumes():
    saved = _with(train__val_batch_size=1)  # a key the retrain schema no longer has
    check_resume_config(SAVED, saved, Path("run/checkpoints/last.pt"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data__crop_size": 513}, "data.crop_size: 321 -> 513"),
        ({"train__lr": 0.1}, "train.lr: 0.05 -> 0.1"),
        ({"seed": 1}, "seed: 0 -> 1"),
        ({"data__root_extra": "x"}, "data.root_extra: None -> 'x'"),  # not data.root itself
    ],
)
def test_other_settings_are_refused_on_resume_naming_them(changes, message):
    with pytest.raises(ValueError, match="last.pt") as info:
        check_resume_config(_with(**changes), SAVED, Path("run/checkpoints/last.pt"))
    assert message in str(info.value)


def test_run_directories_are_never_reused(tmp_path):
    check_run_dir(tmp_path, resume=False, outputs=("split.json",))  # empty: a new run
    (tmp_path / "split.json").write_text("{}")
    with pytest.raises(
        FileExistsError, match=r"stopped before its first checkpoint \(split.json\)"
    ):
        check_run_dir(tmp_path, resume=False, outputs=("split.json",))
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*: pass hydra.run.dir=<the"):
        check_run_dir(tmp_path, resume=True, outputs=("split.json",))
    (tmp_path / CHECKPOINT).parent.mkdir()
    (tmp_path / CHECKPOINT).write_bytes(b"")
    with pytest.raises(FileExistsError, match="already holds a run.*pass resume=true"):
        check_run_dir(tmp_path, resume=False, outputs=("split.json",))
    check_run_dir(tmp_path, resume=True, outputs=("split.json",))


def test_outputs_may_be_patterns_and_hydras_own_record_is_no_earlier_run(tmp_path):
    # With hydra.output_subdir set, Hydra writes .hydra/config.yaml before a new run starts.
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("seed: 0\n")
    check_run_dir(tmp_path, resume=False, outputs=("events.out.tfevents.*",))
    (tmp_path / "events.out.tfevents.1.host").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"before its first checkpoint \(events.out"):
        check_run_dir(tmp_path, resume=False, outputs=("events.out.tfevents.*",))
    with pytest.raises(FileNotFoundError, match="stopped before its first checkpoint cannot"):
        check_run_dir(tmp_path, resume=True, outputs=("events.out.tfevents.*",))


def test_a_lock_taken_on_a_removed_lock_file_is_taken_again(tmp_path, monkeypatch):
    # Another job's refusal removes the lock file it made; a job that opened that file just
    # before must not keep a lock on it, which a third job could not see.
    import fcntl
    import os

    from autodeeplab.engine import rundir

    real_flock, calls = fcntl.flock, []

    def flock(handle, flags):
        real_flock(handle, flags)
        calls.append(handle)
        if len(calls) == 1:
            (tmp_path / ".lock").unlink()  # as the refused job does, between open and flock

    monkeypatch.setattr(rundir.fcntl, "flock", flock)
    handle = rundir.lock_run_dir(tmp_path)
    assert len(calls) == 2 and calls[0].closed and handle is calls[1]
    assert os.fstat(handle.fileno()).st_ino == (tmp_path / ".lock").stat().st_ino
    monkeypatch.setattr(rundir.fcntl, "flock", real_flock)
    with pytest.raises(FileExistsError, match="another run is using"):
        rundir.lock_run_dir(tmp_path)
    handle.close()


def test_another_stages_run_is_refused_resumed_or_not(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    save_checkpoint({"stage": "search"}, tmp_path / CHECKPOINT)
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="holds a search run .* a retrain cannot"):
            check_run_dir(tmp_path, resume, stage="retrain")
    check_run_dir(tmp_path, True, stage="search")


def test_a_refused_resume_points_to_the_original_overrides(tmp_path):
    checkpoint = tmp_path / CHECKPOINT
    with pytest.raises(ValueError, match=r"original settings, or start") as info:
        check_resume_config(_with(seed=1), SAVED, checkpoint)
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra/overrides.yaml").write_text("- seed=0\n")
    with pytest.raises(ValueError) as info:
        check_resume_config(_with(seed=1), SAVED, checkpoint)
    assert f"original settings ({tmp_path}/.hydra/overrides.yaml lists" in str(info.value)
