"""Every option of the benchmark scripts under ``experiments/`` says what it does in ``--help``."""

import argparse
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
SCRIPTS = ["bench_supernet.py", "bench_data.py", "ab_joined_calls.py"]


def test_every_benchmark_script_is_listed():
    assert sorted(SCRIPTS) == sorted(p.name for p in EXPERIMENTS.glob("*.py"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_has_help(name, experiment_script):
    parser: argparse.ArgumentParser = experiment_script(Path(name).stem).build_parser()
    options = [action for action in parser._actions if action.option_strings]
    assert len(options) > 2, options
    undocumented = [action.option_strings[0] for action in options if not action.help]
    assert not undocumented, f"{name}: options without help: {undocumented}"
    assert parser.description, name
