"""The decoded architecture: a cell and a network path, with its JSON file format (README: The
run directory).

A :class:`Genotype` is a small immutable value. Its file form (``autodeeplab-genotype-v1``) is a
public contract: reading a malformed file raises :class:`GenotypeError` naming the file and what is
wrong, never a traceback from deep inside model construction.
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autodeeplab.files import atomic_write_text
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.edges import block_inputs

FORMAT = "autodeeplab-genotype-v1"
EDGES_PER_BLOCK = 2  # top-2 edges per block [P §4.3]


class GenotypeError(ValueError):
    """A genotype (or genotype file) that does not describe a valid architecture."""


@dataclass(frozen=True)
class Edge:
    """One kept edge of a block: apply ``op`` to ``input``."""

    op: str
    input: str


@dataclass(frozen=True)
class Genotype:
    """``cell``: per block, its kept edges (listed in input order by :func:`decode`);
    ``path``: the level (0..3 = output stride 4..32) of each layer.
    ``meta`` holds optional extras (epoch, path probability) and does not take part in equality.
    """

    cell: tuple[tuple[Edge, ...], ...]
    path: tuple[int, ...]
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.cell, (str, bytes)) or not isinstance(self.cell, Sequence):
            raise GenotypeError(f"cell must be a sequence of blocks, got {self.cell!r}")
        if isinstance(self.path, (str, bytes)) or not isinstance(self.path, Sequence):
            raise GenotypeError(f"path must be a sequence of levels, got {self.path!r}")
        cell = tuple(tuple(_edge(e, b) for e in block) for b, block in enumerate(self.cell, 1))
        _validate(cell, self.path, levels=None)
        # Edges in input order (prev_prev, prev, block1, ...): the sum over a block's edges does
        # not depend on their order, so neither do equality and the file form.
        cell = tuple(
            tuple(sorted(block, key=lambda e, b=b: block_inputs(b).index(e.input)))
            for b, block in enumerate(cell, start=1)
        )
        object.__setattr__(self, "cell", cell)
        object.__setattr__(self, "path", tuple(int(level) for level in self.path))

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any, *, levels: int = 4, source: str = "genotype") -> Genotype:
        """Build from the JSON object of the v1 format; errors are prefixed with ``source``."""
        try:
            return cls._from_dict(data, levels)
        except GenotypeError as err:
            raise GenotypeError(f"{source}: {err}") from None

    @classmethod
    def _from_dict(cls, data: Any, levels: int) -> Genotype:
        if not isinstance(data, Mapping):
            raise GenotypeError(f"expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise GenotypeError(f"key 'format' must be {FORMAT!r}, got {data.get('format')!r}")
        for key in ("cell", "path"):
            if key not in data:
                raise GenotypeError(f"missing key {key!r}")
        cell_data, path_data = data["cell"], data["path"]
        if not isinstance(cell_data, list) or not cell_data:
            raise GenotypeError("key 'cell' must be a non-empty list of blocks")
        cell = []
        for b, block in enumerate(cell_data, start=1):
            if not isinstance(block, list) or not block:
                raise GenotypeError(f"cell block{b} must be a non-empty list of edges")
            edges = []
            for e, edge in enumerate(block):
                where = f"cell block{b} edge {e}"
                if not isinstance(edge, Mapping):
                    raise GenotypeError(f"{where} must be an object with 'op' and 'input'")
                for key in ("op", "input"):
                    if key not in edge:
                        raise GenotypeError(f"{where} is missing key {key!r}")
                edges.append(Edge(op=edge["op"], input=edge["input"]))
            cell.append(tuple(edges))
        if not isinstance(path_data, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in path_data
        ):
            raise GenotypeError(f"key 'path' must be a list of integers, got {path_data!r}")
        meta = data.get("meta", {})
        if not isinstance(meta, Mapping):
            raise GenotypeError("key 'meta' must be an object")
        _validate(tuple(cell), tuple(path_data), levels)
        return cls(tuple(cell), tuple(path_data), dict(meta))

    @classmethod
    def from_json(cls, path: str | os.PathLike, *, levels: int = 4) -> Genotype:
        """Read a genotype file (v1 format)."""
        path = Path(path)
        if path.is_dir():
            inside = path / "genotype.json"
            hint = f" (a search run's is {inside})" if inside.is_file() else ""
            raise GenotypeError(f"{path}: is a directory; expected a genotype file{hint}")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise GenotypeError(f"{path}: cannot read genotype file ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise GenotypeError(f"{path}: not a UTF-8 text file, so not JSON ({err})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise GenotypeError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, levels=levels, source=str(path))

    @classmethod
    def named(cls, name: str) -> Genotype:
        """A registered genotype, e.g. ``"paper"`` (the architecture of Auto-DeepLab)."""
        if name not in NAMED_GENOTYPES:
            raise GenotypeError(
                f"unknown genotype name {name!r}; known names: {sorted(NAMED_GENOTYPES)}"
            )
        return cls.from_dict(NAMED_GENOTYPES[name], source=f"genotype {name!r}")

    # -- output ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "cell": [[{"op": e.op, "input": e.input} for e in block] for block in self.cell],
            "path": list(self.path),
        }
        if self.meta:
            data["meta"] = dict(self.meta)
        return data

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The v1 text (one block per line, diffable); also written atomically to ``path``."""
        blocks = ",\n".join(
            "    " + json.dumps([{"op": e.op, "input": e.input} for e in block])
            for block in self.cell
        )
        text = f'{{\n  "format": "{FORMAT}",\n  "cell": [\n{blocks}\n  ],\n'
        text += f'  "path": {json.dumps(list(self.path))}'
        if self.meta:
            text += f',\n  "meta": {json.dumps(dict(self.meta), sort_keys=True)}'
        text += "\n}\n"
        if path is not None:
            atomic_write_text(path, text)
        return text

    def check_levels(self, levels: int) -> None:
        """Raise :class:`GenotypeError` unless every layer of the path lies in
        ``0..levels - 1`` (a genotype built in code is only checked against 0 and jumps)."""
        _validate(self.cell, self.path, levels)

    @property
    def blocks(self) -> int:
        return len(self.cell)

    @property
    def layers(self) -> int:
        return len(self.path)

    def describe(self) -> str:
        """A compact one-line-per-block text form (for logs)."""
        lines = [
            f"block{b}: " + " + ".join(f"{e.op}({e.input})" for e in block)
            for b, block in enumerate(self.cell, start=1)
        ]
        lines.append("path: " + " ".join(str(s) for s in self.path))
        return "\n".join(lines)


def _edge(edge: Any, block: int) -> Any:
    """``edge`` as an :class:`Edge` where it is an ``(op, input)`` pair; anything else is left
    for :func:`_validate` to refuse."""
    if not isinstance(edge, (tuple, list)):
        return edge
    if len(edge) != 2:
        raise GenotypeError(
            f"cell block{block}: {tuple(edge)!r} is not an edge; expected a pair (op, input)"
        )
    return Edge(*edge)


def _validate(cell: Sequence[Sequence[Edge]], path: Sequence[int], levels: int | None) -> None:
    """Raise :class:`GenotypeError` on the first problem; ``levels=None`` skips the upper bound."""
    ops = set(PRIMITIVES) - {"none"}
    if not cell:
        raise GenotypeError("cell must hold at least one block")
    for b, block in enumerate(cell, start=1):
        allowed = block_inputs(b)
        if len(block) != EDGES_PER_BLOCK:
            raise GenotypeError(
                f"cell block{b} has {len(block)} edges; a block keeps exactly {EDGES_PER_BLOCK}"
            )
        for edge in block:
            if not isinstance(edge, Edge):
                raise GenotypeError(f"cell block{b}: {edge!r} is not an edge (op, input)")
            for key in ("op", "input"):
                if not isinstance(getattr(edge, key), str):
                    raise GenotypeError(
                        f"cell block{b}: {key} must be a string, got {getattr(edge, key)!r}"
                    )
            if edge.op not in ops:
                raise GenotypeError(
                    f"cell block{b}: unknown op {edge.op!r}; expected one of {sorted(ops)}"
                )
            if edge.input not in allowed:
                raise GenotypeError(
                    f"cell block{b}: input {edge.input!r} is not readable by this block "
                    f"(a block reads {', '.join(allowed)})"
                )
        inputs = [edge.input for edge in block]
        if len(set(inputs)) != len(inputs):
            raise GenotypeError(
                f"cell block{b} reads {inputs[0]!r} twice; its edges need distinct inputs"
            )
    if not path:
        raise GenotypeError("path must hold at least one layer")
    for layer, level in enumerate(path, start=1):
        if isinstance(level, bool) or not isinstance(level, numbers.Integral):
            raise GenotypeError(f"path layer {layer} has level {level!r}; expected an integer")
    previous = 0  # the stem sits at level 0
    for layer, level in enumerate(path, start=1):
        if level < 0 or (levels is not None and level >= levels):
            raise GenotypeError(
                f"path layer {layer} has level {level}; levels run 0.."
                + (str(levels - 1) if levels is not None else "")
            )
        if abs(level - previous) > 1:
            raise GenotypeError(
                f"path jumps from level {previous} to {level} at layer {layer}; "
                "a transition moves at most one level"
            )
        previous = level


def _e(op: str, input_name: str) -> dict[str, str]:
    return {"op": op, "input": input_name}


#: Registered genotypes; read-only by convention, tests iterate over all of them.
NAMED_GENOTYPES: dict[str, dict[str, Any]] = {
    # Auto-DeepLab's architecture [TF nas_genotypes.py `hnasnet`, P Fig. 3].
    "paper": {
        "format": FORMAT,
        "cell": [
            [_e("atrous_conv_5x5", "prev_prev"), _e("sep_conv_3x3", "prev")],
            [_e("sep_conv_3x3", "prev_prev"), _e("atrous_conv_3x3", "prev")],
            [_e("sep_conv_3x3", "block2"), _e("sep_conv_3x3", "prev_prev")],
            [_e("sep_conv_5x5", "block3"), _e("sep_conv_5x5", "block1")],
            [_e("sep_conv_5x5", "block2"), _e("atrous_conv_5x5", "block4")],
        ],
        "path": [0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1],
    },
}


def load_genotype(spec: str, levels: int = 4) -> Genotype:
    """``spec``: a registered name such as ``"paper"`` or a genotype.json path. A registered
    name is never read as a path, so the default (``paper``) does not depend on what the
    working directory holds: a file of that name is ``./paper``."""
    if not spec.strip():  # Path("") would be the working directory
        raise GenotypeError(
            "genotype is empty; pass genotype=<a genotype.json file> or a registered name "
            f"({', '.join(sorted(NAMED_GENOTYPES))})"
        )
    if spec in NAMED_GENOTYPES:
        return Genotype.named(spec)
    path = Path(spec)
    if path.suffix == ".json" or path.exists():
        return Genotype.from_json(path, levels=levels)
    try:
        return Genotype.named(spec)
    except GenotypeError as err:
        raise GenotypeError(
            f"genotype={spec!r} is neither a genotype file nor a name: {err}"
        ) from None
