"""The README's Python API example runs as written (a placeholder run path aside)."""

from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block(heading: str) -> str:
    section = README.read_text().split(f"## {heading}\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_python_api_example_runs():
    code = _python_block("Python API")
    # Lines that read a run of the user's (``<run>``) need one; the rest runs as written.
    lines = code.splitlines()
    runnable = [line for line in lines if "<run>" not in line]
    assert len(runnable) == len(lines) - 1
    scope: dict = {}
    exec(compile("\n".join(runnable), str(README), "exec"), scope)  # noqa: S102
    assert scope["logits"].shape == (2, 19, 65, 65)
    assert scope["out"].shape == (2, 19, 65, 65)
    assert tuple(scope["alpha"].shape) == (20, 8) and tuple(scope["beta"].shape) == (12, 4, 3)
    assert len(scope["g"].path) == 12
    assert isinstance(scope["images"], torch.Tensor)
