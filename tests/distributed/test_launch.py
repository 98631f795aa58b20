"""The command-line overrides that make every rank use rank 0's run directory."""

import contextlib
import datetime
import logging
import os
import subprocess
import sys
import time

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser

from autodeeplab.conf_path import CONF_DIR
from autodeeplab.data.base import DatasetError
from autodeeplab.engine.config import store_schema
from autodeeplab.launch import (
    _hydra_value,
    add_overrides,
    rank_overrides,
    refuse_unknown_keys,
    split_command_line,
    user_errors,
    user_message,
)
from autodeeplab.search.config import SearchConfig

store_schema("search_schema", SearchConfig)


@pytest.mark.parametrize(
    "text",
    [
        "runs/search/2026-01-02_03-04-05",
        "/data/my runs/a,b=c",
        "it's [1]",
        "C:\\r\\",
        "x\\'",
        "runs/été/Zürich",  # non-ASCII letters: Hydra takes them only quoted
        "runs/a~b",
    ],
)
def test_values_survive_hydras_override_parser(text):
    override = OverridesParser.create().parse_override(f"hydra.run.dir={_hydra_value(text)}")
    assert override.value() == text


def test_rank_0_resolves_the_run_directory_once():
    (run_dir,) = rank_overrides(CONF_DIR, "search", ["experiment=smoke", "seed=3"])
    year = datetime.datetime.now().year
    assert run_dir.startswith(f"hydra.run.dir=runs/search/{year}-")
    (mine,) = rank_overrides(CONF_DIR, "search", ["hydra.run.dir=out/${now:%Y}/x", "--info"])
    assert mine == f"hydra.run.dir=out/{year}/x"


def test_a_config_error_is_left_to_hydra():
    assert rank_overrides(CONF_DIR, "search", ["search.epocs=3"]) == []


@pytest.mark.parametrize(
    "argv, name, overrides",
    [
        (["seed=1", "--config-name", "check", "x=2"], "check", ["seed=1", "x=2"]),
        (["-cn", "check"], "check", []),
        (["--config-name=check", "a=1"], "check", ["a=1"]),
        (["-cd", "my/conf", "a=1", "--info", "config", "b=2"], "search", ["a=1", "b=2"]),
        (["--info", "a=1", "-m"], "search", ["a=1"]),
        (["--cfg", "job", "a=1", "-c", "hydra", "-p", "x.y"], "search", ["a=1"]),
    ],
)
def test_hydra_flags_and_their_values_are_not_overrides(argv, name, overrides):
    assert split_command_line(argv, "search") == (name, overrides)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train.lr=0.1", "--cfg", "job"], ["train.lr=0.1", "X", "--cfg", "job"]),
        (["--cfg", "job", "a=1", "b=2"], ["--cfg", "job", "a=1", "b=2", "X"]),
        (["a=1", "-m", "b=2"], ["a=1", "-m", "b=2", "X"]),
        (["--help"], ["X", "--help"]),
        (["--info"], ["X", "--info"]),  # not taken for --info's value
        ([], ["X"]),
    ],
)
def test_added_overrides_follow_the_users_overrides(argv, expected):
    # After the user's: Hydra applies overrides in order, so rank 0's run directory wins over a
    # user's ``hydra.run.dir=...${now:...}`` that each rank would resolve to its own time.
    command = ["prog", *argv]
    add_overrides(command, ["X"])
    assert command == ["prog", *expected]


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--help", "--cfg job", "--info"])
@pytest.mark.parametrize("stage", ["retrain", "evaluate", "export"])
def test_hydras_flags_work_after_overrides(tmp_path, stage, flag):
    override = {"retrain": "seed=3", "evaluate": "flip=true", "export": "seed=3"}[stage]
    command = [sys.executable, "-m", f"autodeeplab.{stage}", override, *flag.split()]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "unrecognized arguments" not in result.stderr


def test_a_separate_config_name_is_used_to_resolve_the_run_directory():
    import autodeeplab.data.__main__  # noqa: F401  (registers check_schema)

    (run_dir,) = rank_overrides(CONF_DIR, "search", ["--config-name", "check"])
    assert "autodeeplab-check" in run_dir


@pytest.mark.parametrize("flag", ["-cd", "--config-dir"])
def test_a_users_config_dir_is_searched_to_resolve_the_run_directory(tmp_path, flag):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.yaml").write_text("defaults:\n  - textures\n  - _self_\n")
    (run_dir,) = rank_overrides(CONF_DIR, "search", [flag, str(tmp_path), "data=mine"])
    assert run_dir.startswith("hydra.run.dir=runs/search/")
    assert rank_overrides(CONF_DIR, "search", ["data=mine"]) == []  # not found without it


def test_a_users_own_job_logging_is_left_alone_on_other_ranks(monkeypatch):
    from autodeeplab.engine import distributed

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    monkeypatch.setattr(distributed, "run_on_main", lambda fn: fn())
    plain = rank_overrides(CONF_DIR, "search", ["seed=1"])
    assert "hydra/job_logging=stdout" in plain
    own = rank_overrides(CONF_DIR, "search", ["hydra/job_logging=disabled"])
    assert not any(o.startswith("hydra/job_logging") or "job_logging." in o for o in own)


class _BrokenItem(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise DatasetError(f"masks/{index}.png: label values [7] are not classes")


def test_a_data_error_in_a_loader_worker_is_reported_as_its_own_message(caplog):
    loader = torch.utils.data.DataLoader(_BrokenItem(), num_workers=1)
    with pytest.raises(DatasetError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # as PyTorch re-raises it
    assert user_message(caught.value) == "masks/0.png: label values [7] are not classes"
    plain = DatasetError("a: b")
    assert user_message(plain) == "a: b"

    log = logging.getLogger("test_launch")
    with pytest.raises(SystemExit) as exited, caplog.at_level(logging.ERROR):
        with user_errors(log):
            next(iter(loader))
    assert exited.value.code == 2
    assert caplog.messages == ["masks/0.png: label values [7] are not classes"]


def _refuse(run_dir, *, write=None, error=None):
    with pytest.raises(SystemExit) as exited:
        with user_errors(logging.getLogger("test_launch"), run_dir):
            if write is not None:
                (run_dir / write).write_text("{}")
            raise error or ValueError("search.batch_size=0: expected a positive number")
    assert exited.value.code == 2


def _job_dir(tmp_path, name, log=""):
    """A run directory as Hydra makes it for a job: the job's log file (empty)."""
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "search.log").write_text(log)
    return run_dir


def test_a_refused_command_leaves_no_empty_run_directory_behind(tmp_path):
    fresh = _job_dir(tmp_path, "fresh")
    _refuse(fresh)
    assert not fresh.exists()
    # Anything else in the directory keeps it: outputs written before the error, a log with
    # an earlier job's lines, another job that started meanwhile in the same directory (its
    # lock), or the refusal of a directory in use.
    written = _job_dir(tmp_path, "written")
    _refuse(written, write="split.json")
    assert sorted(p.name for p in written.iterdir()) == ["search.log", "split.json"]
    earlier = _job_dir(tmp_path, "earlier", log="an earlier run's line\n")
    _refuse(earlier)
    assert (earlier / "search.log").read_text().startswith("an earlier run's line")
    shared = _job_dir(tmp_path, "shared")
    _refuse(shared, write=".lock")
    assert sorted(p.name for p in shared.iterdir()) == [".lock", "search.log"]
    busy = _job_dir(tmp_path, "busy")
    _refuse(busy, error=FileExistsError("another run is using it"))
    assert [p.name for p in busy.iterdir()] == ["search.log"]


@contextlib.contextmanager
def _job_log(path):
    """The job's log file at ``path`` as Hydra's job logging makes it for the stages: a
    handler of the root logger that opens the file with its first line."""
    handler = logging.FileHandler(path, delay=True)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()


def test_a_command_refused_after_a_warning_leaves_neither_directory_nor_log(tmp_path):
    # A warning about the settings opened the job's log file before the refusal: the refusal
    # still removes the directory, so that a later run there does not open with these lines.
    log = logging.getLogger("test_launch")
    for name in ("fresh", "empty"):  # as Hydra left it: an empty log file, or none yet
        run_dir = tmp_path / name
        run_dir.mkdir()
        if name == "fresh":
            (run_dir / "search.log").write_text("")
        with _job_log(run_dir / "search.log"):
            with pytest.raises(SystemExit), user_errors(log, run_dir):
                log.warning("search.arch_start_epoch=1 with search.epochs=1: ...")
                assert (run_dir / "search.log").read_text()
                raise ValueError("split B has 1 samples, fewer than search.batch_size=2")
        assert not run_dir.exists()
    # Once the job has started, its log stays, with the error in it.
    run_dir = _job_dir(tmp_path, "started")
    with _job_log(run_dir / "search.log"):
        with pytest.raises(SystemExit), user_errors(log, run_dir) as started:
            log.warning("a warning")
            started()
            raise ValueError("epoch 1: the search diverged")
    assert "the search diverged" in (run_dir / "search.log").read_text()


def test_a_refused_command_keeps_an_empty_directory_the_user_made(tmp_path):
    # hydra.run.dir=<an empty folder made before the command>: Hydra's mkdir finds it there.
    mine = tmp_path / "mine"
    mine.mkdir()
    made = time.time() - 60
    os.utime(mine, (made, made))
    with _job_log(mine / "search.log"):
        _refuse(mine)
    assert mine.is_dir() and not any(mine.iterdir())  # kept, and nothing written into it


def test_a_refused_command_with_a_delayed_log_file_leaves_nothing_behind(tmp_path):
    # The stages open their log file with its first line: Hydra leaves the job an empty
    # directory, and the refusal, on the console only, creates no log file.
    (tmp_path / "fresh").mkdir()
    with _job_log(tmp_path / "fresh" / "search.log"):
        _refuse(tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()
    # Another run's directory (refused with FileExistsError) gets no log file either.
    other = tmp_path / "other"
    other.mkdir()
    (other / "genotype.json").write_text("{}")
    with _job_log(other / "retrain.log"):
        _refuse(other, error=FileExistsError(f"{other} holds a search run"))
    assert [p.name for p in other.iterdir()] == ["genotype.json"]


def test_a_refused_resume_of_a_new_directory_leaves_nothing_behind(tmp_path):
    # resume=true with a new hydra.run.dir: the directory is locked, then refused (no
    # checkpoint); the lock file this job made goes with it.
    from autodeeplab.engine.rundir import open_run_dir

    fresh = _job_dir(tmp_path, "fresh")
    with pytest.raises(SystemExit), user_errors(logging.getLogger("test_launch"), fresh):
        with open_run_dir(fresh, resume=True, config={}, on_start=lambda: pytest.fail("started")):
            pass
    assert not fresh.exists()
    # A lock file that was there before (an earlier run's directory) stays.
    earlier = _job_dir(tmp_path, "earlier")
    (earlier / ".lock").write_text("")
    with pytest.raises(SystemExit), user_errors(logging.getLogger("test_launch"), earlier):
        with open_run_dir(earlier, resume=True, config={}):
            pass
    assert sorted(p.name for p in earlier.iterdir()) == [".lock", "search.log"]


def test_a_refusal_removes_the_folders_hydra_made_above_the_run_directory(tmp_path, monkeypatch):
    import autodeeplab.launch as launch

    # The working directory held "old" when the command started; "runs" and "new" are new.
    cwd = tmp_path / "cwd"
    (cwd / "old").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(launch, "_START_DIR", cwd.resolve())
    monkeypatch.setattr(launch, "_START_ENTRIES", frozenset({"old"}))
    (cwd / "runs" / "search").mkdir(parents=True)
    _refuse(_job_dir(cwd / "runs" / "search", "job"))
    assert [p.name for p in cwd.iterdir()] == ["old"]
    # A folder that was there before stays, and so do the folders below it.
    (cwd / "old" / "search").mkdir()
    _refuse(_job_dir(cwd / "old" / "search", "job"))
    assert [p.name for p in (cwd / "old").iterdir()] == ["search"]
    # Removal stops at a folder that holds anything else (another job's run directory).
    (cwd / "new" / "search" / "other").mkdir(parents=True)
    _refuse(_job_dir(cwd / "new" / "search", "job"))
    assert [p.name for p in (cwd / "new" / "search").iterdir()] == ["other"]
    # Outside the working directory nothing above the run directory is touched.
    (tmp_path / "outside").mkdir()
    _refuse(_job_dir(tmp_path / "outside", "job"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "outside"]
    # A process that has changed directory since (a notebook) has a stale snapshot: nothing.
    monkeypatch.chdir(cwd / "old")
    (cwd / "later" / "search").mkdir(parents=True)
    _refuse(_job_dir(cwd / "later" / "search", "job"))
    assert (cwd / "later" / "search").is_dir()


def test_a_setting_left_unset_says_which_to_pass():
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = OmegaConf.create({"data": {"root": "???"}})
    with pytest.raises(MissingMandatoryValue) as caught:
        OmegaConf.to_container(cfg, throw_on_missing=True)
    assert user_message(caught.value) == "data.root is not set; pass data.root=<value>"


def test_a_refusal_before_the_job_starts_writes_nothing_into_an_existing_directory(tmp_path):
    # An earlier run's directory (or another stage's): a bad setting refused before the job
    # starts leaves its log as it was; an error once the job has started is logged there.
    run_dir = _job_dir(tmp_path, "earlier", log="an earlier run's line\n")
    with _job_log(run_dir / "search.log") as handler:
        _refuse(run_dir)
        assert (run_dir / "search.log").read_text() == "an earlier run's line\n"
        logging.getLogger().addHandler(handler)  # the refusal closed it
        with pytest.raises(SystemExit):
            with user_errors(logging.getLogger("test_launch"), run_dir) as started:
                started()
                raise ValueError("epoch 3: the search diverged")
    assert "the search diverged" in (run_dir / "search.log").read_text()


@pytest.mark.parametrize(
    "argv",
    [
        ["-sc", "install=bash"],  # Hydra's shell completion
        ["--config-name", "check", "splits=[train]"],  # another config, another schema
        ["-cd", "{mine}", "mygroup=a"],  # a group of a folder the command line adds
        ["hydra.searchpath=[file://{mine}]", "mygroup=a"],
        ["experiment=smoke", "data=cityscapes", "+new=1", "~search.max_steps", "seed=0,1"],
    ],
)
def test_refuse_unknown_keys_leaves_what_it_cannot_judge_to_hydra(argv, tmp_path):
    (tmp_path / "mygroup").mkdir()
    argv = [arg.replace("{mine}", str(tmp_path)) for arg in argv]
    refuse_unknown_keys(argv, "search", SearchConfig, [CONF_DIR])  # returns, no exit


def test_refuse_unknown_keys_exits_naming_the_closest_key(capsys):
    with pytest.raises(SystemExit) as exited:
        refuse_unknown_keys(
            ["experiment=smoke", "serch.epochs=4"], "search", SearchConfig, [CONF_DIR]
        )
    assert exited.value.code == 2
    assert "unknown config key 'serch' (did you mean 'search'?)" in capsys.readouterr().out
