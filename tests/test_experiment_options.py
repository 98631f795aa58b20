"""Every option of the benchmark scripts under ``experiments/`` says what it does in ``--help``."""

import argparse
import importlib.util
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
SCRIPTS = ["bench_supernet.py", "bench_data.py", "ab_joined_calls.py"]


def _parser(name: str) -> argparse.ArgumentParser:
    spec = importlib.util.spec_from_file_location(Path(name).stem, EXPERIMENTS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser()


def test_every_benchmark_script_is_listed():
    assert sorted(SCRIPTS) == sorted(p.name for p in EXPERIMENTS.glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_has_help(name):
    parser = _parser(name)
    options = [action for action in parser._actions if action.option_strings]
    assert len(options) > 2, options
    undocumented = [action.option_strings[0] for action in options if not action.help]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    assert parser.description, name
