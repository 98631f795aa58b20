"""The stages' Hydra command lines under ``torchrun``: one process group and one run directory.

Hydra resolves ``hydra.run.dir`` (``runs/<stage>/${now:...}``) in every process, each at its own
moment; rank 0 resolves it once and every rank is given the result as an override. Ranks other
than 0 log warnings and errors to the console only (no log file in the run directory). Without
``torchrun`` (or with one process) nothing here changes the command line.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from autodeeplab.engine import distributed


def _resolve_run_dir(config_dir: str, config_name: str, overrides: Sequence[str]) -> str | None:
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(config_dir=config_dir, version_base=None):
            cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
            return str(cfg.hydra.run.dir)
    except Exception:
        return None  # a config error, which Hydra reports on every rank in a moment


def _hydra_value(text: str) -> str:
    """``text`` as the value of a Hydra command-line override (quoted when it must be)."""
    if re.fullmatch(r"[\w/.:+@-]+", text, re.ASCII):  # Hydra's lexer refuses a bare ``~``
        return text
    # In Hydra's quoted strings a backslash escapes only a quote or the backslashes before one.
    escaped = re.sub(r"(\\*)('|$)", lambda m: 2 * m[1] + ("\\'" if m[2] else ""), text)
    return f"'{escaped}'"


#: Hydra's flags that take a value, and ``--info``'s optional values.
_VALUE_FLAGS = {
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--experimental-rerun",
}
_INFO_VALUES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def _parse(argv: Sequence[str], config_name: str) -> tuple[str, list[int], list[str]]:
    """A stage's command line (without the program name) -> (the config name it selects, the
    positions of its overrides, the config folders it adds): Hydra's flags and their values
    are not overrides, ``--config-name``/``-cn`` (``X`` or ``=X``) replaces the stage's
    default config name and ``--config-dir``/``-cd`` adds a folder to the search path."""
    positions: list[int] = []
    config_dirs: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        flag, eq, value = arg.partition("=")
        if flag in _VALUE_FLAGS:
            if not eq:
                value = argv[i] if i < len(argv) else ""
                i += 1
            if flag in ("--config-name", "-cn"):
                config_name = value
            elif flag in ("--config-dir", "-cd"):
                config_dirs.append(value)
        elif arg in ("--info", "-i"):
            if i < len(argv) and argv[i] in _INFO_VALUES:
                i += 1
        elif not arg.startswith("-"):
            positions.append(i - 1)
    return config_name, positions, config_dirs


def split_command_line(argv: Sequence[str], config_name: str) -> tuple[str, list[str]]:
    """A stage's command line (without the program name) -> (the config name it selects, its
    overrides), as :func:`_parse` reads it."""
    config_name, positions, _ = _parse(argv, config_name)
    return config_name, [argv[i] for i in positions]


def _with_search_path(overrides: list[str], folders: Sequence[str]) -> list[str]:
    """``overrides`` with ``folders`` first in its ``hydra.searchpath`` (added if it has none),
    as ``--config-dir`` puts them on the search path of the command line itself."""
    if not folders:
        return overrides
    entries = [_hydra_value(f"file://{Path(folder).resolve()}") for folder in folders]
    prefix = "hydra.searchpath=["
    for i, override in enumerate(overrides):
        if override.startswith(prefix) and override.endswith("]"):
            rest = override[len(prefix) : -1]
            overrides[i] = prefix + ",".join(entries + ([rest] if rest else [])) + "]"
            return overrides
    return [*overrides, prefix + ",".join(entries) + "]"]


def add_overrides(argv: list[str], extra: Sequence[str]) -> None:
    """Insert ``extra`` overrides into the command line ``argv`` (with the program name) just
    after its last override (so that they win over the user's), or first where it has none:
    Hydra reads the overrides as one run of positional arguments, so appending them after a
    flag (``train.lr=0.1 --cfg job``) would split the run and fail, and after a bare ``--info``
    they would be taken for its value."""
    _, positions, _ = _parse(argv[1:], "")
    at = positions[-1] + 2 if positions else 1
    argv[at:at] = list(extra)


def rank_overrides(config_dir: str, config_name: str, argv: Sequence[str]) -> list[str]:
    """Overrides to append to this rank's command line ``argv`` (without the program name):
    the run directory rank 0 resolved, and console-only logging on the other ranks (unless the
    command line picks its own ``hydra/job_logging``). Every rank must call this (it is a
    collective)."""
    config_name, positions, config_dirs = _parse(argv, config_name)
    overrides = [argv[i] for i in positions]
    searched = _with_search_path(list(overrides), config_dirs)
    run_dir = distributed.run_on_main(lambda: _resolve_run_dir(config_dir, config_name, searched))
    extra = [] if run_dir is None else [f"hydra.run.dir={_hydra_value(run_dir)}"]
    own_logging = any(o.lstrip("+~").startswith("hydra/job_logging=") for o in overrides)
    if not distributed.is_main() and not own_logging:
        extra += [
            "hydra/job_logging=stdout",
            "hydra.job_logging.root.level=WARNING",
            "hydra.job_logging.formatters.simple.format="
            + _hydra_value(f"[rank {distributed.rank()}][%(levelname)s] - %(message)s"),
        ]
    return extra


@contextmanager
def torchrun_stage(config_dir: str, config_name: str) -> Iterator[None]:
    """Around a stage's Hydra ``main()``: under ``torchrun`` with several processes, join the
    process group, agree on the run directory (``sys.argv`` gets :func:`rank_overrides`) and
    leave the group at the end. A no-op for a single process."""
    if not distributed.launched():
        yield
        return
    distributed.setup()
    add_overrides(sys.argv, rank_overrides(config_dir, config_name, sys.argv[1:]))
    clean = False
    try:
        yield
        clean = True
    finally:
        distributed.teardown(clean)


def refuse_unknown_keys(
    argv: Sequence[str], config_name: str, schema: type, config_dirs: Sequence[str]
) -> None:
    """Before Hydra composes a stage's config (``argv`` without the program name): an override
    of a key the stage's ``schema`` lacks (a typo: ``serch.epochs=4``) exits with status 2 and
    one line naming the closest known key, as the stage's own refusals do; Hydra's message would
    suggest adding the key with ``+``, which the schema then refuses. Config groups (folders of
    ``config_dirs``: ``experiment=smoke``), Hydra's own settings, additions (``+key``, checked
    once composed) and overrides Hydra cannot parse are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from autodeeplab.engine.config import unknown_key_message

    if any(
        arg in ("-sc", "--shell-completion") or arg.startswith("--shell-completion=")
        for arg in argv
    ):
        return  # Hydra's shell completion reads its own arguments
    selected, positions, extra_dirs = _parse(argv, config_name)
    if selected != config_name:
        return  # another config (--config-name), of another schema
    overrides = [argv[i] for i in positions]
    config_dirs = [*config_dirs, *extra_dirs]
    # Groups the command line adds to the search path cannot be listed here.
    groups_unknown = any(o.startswith("hydra.searchpath") for o in overrides)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:
        return  # Hydra reports it, with its own message
    for override in parsed:
        key = override.key_or_group
        if (
            override.is_add()
            or override.is_force_add()
            or override.package is not None
            or key == "hydra"
            or key.startswith(("hydra.", "hydra/"))
            or "/" in key
            or ("." not in key and groups_unknown)
            or ("." not in key and any((Path(d) / key).is_dir() for d in config_dirs))
        ):
            continue
        message = unknown_key_message(key, schema)
        if message is not None:
            handler = logging.StreamHandler(sys.stdout)  # where the stages' console log goes
            handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            handler.emit(
                logging.makeLogRecord(
                    {"name": f"autodeeplab.{config_name}", "levelname": "ERROR", "msg": message}
                )
            )
            sys.exit(2)


#: The console format of Hydra's default job logging, which the stages log through.
_LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


#: Errors that mean the user asked for something wrong (a bad key, file or value): reported as
#: one log line and exit status 2, never as a traceback.
USER_ERRORS = (
    ValueError,
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


@contextmanager
def user_errors(log: logging.Logger, run_dir: Path | None = None) -> Iterator[Callable[[], None]]:
    """Around a stage's work: a user error becomes one ``log.error`` line and ``exit(2)``.
    Yields the function to call when the job starts in ``run_dir`` (its ``on_start``).

    ``run_dir`` is the directory Hydra made for this job. Where the settings are refused before
    the job started and nothing but its log was written there, the refusal goes to the
    console only and the directory is removed again, its log with it (the console has shown
    the log's lines, e.g. a warning about the settings), so that refused commands leave no run
    directories behind, nor lines in the log of a later run there. A directory that already
    existed (an earlier run's, another stage's, or an empty one the user made: older than this
    process) gets nothing of a refusal that comes before the job starts, and stays. The stages
    open their log file with its first line (``delay`` in their Hydra logging config); an
    empty log file, as Hydra's default logging makes it, counts as nothing written."""
    from omegaconf.errors import MissingMandatoryValue

    fresh = None
    if run_dir is not None and _made_by_this_process(run_dir):
        fresh = _empty_logs(run_dir)
    started = False

    def start() -> None:
        nonlocal started
        started = True

    try:
        yield start
    except (*USER_ERRORS, MissingMandatoryValue) as err:
        # Another run's directory, even one that holds nothing yet, is left as it is.
        others = isinstance(err, FileExistsError) or (
            run_dir is not None and fresh is None and not started
        )
        # Empty on entry but for empty logs, and still nothing but logs: only this job's lines.
        logs = _logs(run_dir) if fresh is not None and not started else None
        untouched = not others and logs is not None and distributed.world_size() == 1
        if untouched or others:
            _close_log_files()
        log.error("%s", user_message(err))
        if untouched:
            try:
                for path in logs:
                    path.unlink()
                run_dir.rmdir()  # fails, keeping it, where anything else has appeared
                _remove_empty_parents(run_dir)
            except OSError:
                pass
        sys.exit(2)


def _remove_empty_parents(run_dir: Path) -> None:
    """Remove the folders Hydra made above a removed ``run_dir`` (``runs/search/`` in a fresh
    clone): where the run directory's top folder below the working directory was not there
    when this module was imported, every folder between it and ``run_dir`` is this job's, and
    each is removed while empty (``rmdir`` fails on one another job has just written into,
    which stays). Folders below one that was there before (``runs/retrain/`` made in an
    existing ``runs/``) stay, as does anything outside the working directory or when the
    process has changed directory since the import. (Another job in the same fresh clone may
    find ``runs/`` gone between its own two ``mkdir`` calls: a window of microseconds.)"""
    cwd, run_dir = _START_DIR, run_dir.resolve()
    try:  # a process that has changed directory since (a notebook): its snapshot is stale
        same = cwd is not None and Path.cwd().resolve() == cwd
    except OSError:
        same = False
    if not same or _START_ENTRIES is None or cwd not in run_dir.parents:
        return
    top = cwd / run_dir.relative_to(cwd).parts[0]
    if top.name in _START_ENTRIES:
        return
    parent = run_dir.parent
    while parent != cwd:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


#: When this module was imported: a stage's command line imports it before Hydra makes the
#: run directory.
_IMPORTED = time.time()


def _start_listing() -> tuple[Path | None, frozenset[str] | None]:
    try:
        cwd = Path.cwd().resolve()
        return cwd, frozenset(os.listdir(cwd))
    except OSError:  # a working directory removed meanwhile
        return None, None


#: The working directory and its entries at that moment (for :func:`_remove_empty_parents`).
_START_DIR, _START_ENTRIES = _start_listing()


def _made_by_this_process(run_dir: Path) -> bool:
    """Whether ``run_dir`` was made (or last changed) after this process imported this module,
    less a second for file systems with coarse times: by Hydra for this job, not by the user
    before the command."""
    try:
        return run_dir.stat().st_mtime >= _IMPORTED - 1.0
    except OSError:
        return False


def _logs(run_dir: Path) -> list[Path] | None:
    """The log files of ``run_dir`` where it holds nothing else (none at all for an empty
    directory); else None."""
    try:
        entries = sorted(run_dir.iterdir())
    except OSError:
        return None
    logs = [p for p in entries if p.suffix == ".log" and p.is_file()]
    return logs if len(logs) == len(entries) else None


def _empty_logs(run_dir: Path) -> list[Path] | None:
    """The log files of ``run_dir`` where it holds nothing else and they are all empty (none
    at all for an empty directory), as Hydra leaves a job's new directory; else None."""
    logs = _logs(run_dir)
    return logs if logs is not None and all(p.stat().st_size == 0 for p in logs) else None


def user_message(err: BaseException) -> str:
    """``err``'s message; for an error raised in a DataLoader worker process, which PyTorch
    re-raises wrapped in the worker's traceback, the original message alone; for a setting
    left unset (``???`` in the config), which one to pass."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, MissingMandatoryValue) and getattr(err, "full_key", None):
        return f"{err.full_key} is not set; pass {err.full_key}=<value>"
    text = str(err)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name = type(err).__name__
        # The traceback's last line: "<module>.<ErrorName>: <message>".
        head, sep, message = last.partition(": ")
        if sep and head.split(".")[-1] == name:
            return message
    return text


def _close_log_files() -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
