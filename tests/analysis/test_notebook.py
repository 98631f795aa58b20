"""``notebooks/analyze_search.ipynb`` executed headless: no errors, every figure rendered."""

from pathlib import Path

import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analyze_search.ipynb"
FIGURES = (
    9  # alpha, its evolution, entropy, beta, lattice, cell, the paper's cell, changes, compare
)


def _execute(tmp_path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # the kernel's working directory
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook


def _outputs(notebook, kind):
    return [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if kind in output.get("data", {})
    ]


def test_notebook_is_a_valid_unexecuted_notebook():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not c.outputs for c in notebook.cells if c.cell_type == "code")
    assert notebook.metadata.kernelspec.name == "python3"


def test_notebook_runs_on_a_smoke_run(smoke_dir, smoke_dir_seed1, tmp_path, monkeypatch):
    monkeypatch.setenv("RUN_DIR", str(smoke_dir))
    monkeypatch.setenv("COMPARE_DIR", str(smoke_dir_seed1))
    notebook = _execute(tmp_path)
    assert len(_outputs(notebook, "image/png")) == FIGURES
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert str(smoke_dir) in text and "stable from epoch" in text
    assert list(tmp_path.iterdir()) == []  # nothing written beside the kernel


def test_notebook_skips_the_comparison_for_a_users_run_alone(smoke_dir, tmp_path, monkeypatch):
    # As if the user's own run (no smoke fallback), given relative to the directory Jupyter
    # was started in, while the kernel runs elsewhere (in the notebook's folder).
    monkeypatch.setenv("PWD", str(smoke_dir.parent))
    monkeypatch.setenv("RUN_DIR", smoke_dir.name)
    monkeypatch.setenv("COMPARE_DIR", "")  # empty counts as unset
    notebook = _execute(tmp_path)
    assert len(_outputs(notebook, "image/png")) == FIGURES - 1
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "COMPARE_DIR is not set" in text


@pytest.mark.slow
def test_notebook_runs_its_own_smoke_search_without_run_dir(smoke_dir_seed1, tmp_path, monkeypatch):
    monkeypatch.delenv("RUN_DIR", raising=False)
    monkeypatch.setenv("COMPARE_DIR", str(smoke_dir_seed1))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # where the kernel's temporary directory goes
    notebook = _execute(tmp_path)
    assert len(_outputs(notebook, "image/png")) == FIGURES
    run_dir = Path(notebook.cells[1].outputs[0]["text"].splitlines()[0])
    assert run_dir.name == "smoke" and run_dir.parent.parent == tmp_path
    assert (run_dir / "genotype.json").is_file()


@pytest.mark.slow
def test_notebook_names_and_skips_a_comparison_run_of_another_space(
    smoke_dir, smoke_dir_two_levels, tmp_path, monkeypatch
):
    other = smoke_dir_two_levels
    monkeypatch.setenv("RUN_DIR", str(smoke_dir))
    monkeypatch.setenv("COMPARE_DIR", str(other))
    notebook = _execute(tmp_path)  # no cell fails
    assert len(_outputs(notebook, "image/png")) == FIGURES - 1
    text = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert f"COMPARE_DIR={other}: cannot compare runs of Lattice(layers=3, levels=3) and " in text
    assert "skipping the comparison" in text
