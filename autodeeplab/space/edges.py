"""The edges of a cell: which inputs each block reads, and alpha's row order [P §3.1].

Block ``i`` (1-based) reads ``prev_prev`` (H^{l-2}), ``prev`` (H^{l-1}) and the outputs of blocks
``1..i-1``, so a cell of B blocks has ``2 + 3 + ... + (B + 1)`` edges (20 for B = 5). alpha's rows
follow :func:`cell_edges`: block-major, and within a block in :func:`block_inputs` order.
"""

from __future__ import annotations


def block_inputs(block: int) -> list[str]:
    """The names of the inputs block ``block`` (1-based) may read, in edge order."""
    if block < 1:
        raise ValueError(f"blocks are numbered from 1, got {block}")
    return ["prev_prev", "prev"] + [f"block{k}" for k in range(1, block)]


def cell_inputs(blocks: int = 5) -> list[str]:
    """Every tensor a block can read: ``prev_prev``, ``prev``, ``block1`` .. ``block{B-1}``."""
    return block_inputs(blocks)


def cell_edges(blocks: int = 5) -> list[str]:
    """alpha's row names, ``"block{i}<-{input}"``, in row order."""
    return [f"block{i}<-{name}" for i in range(1, blocks + 1) for name in block_inputs(i)]


def edge_row(block: int, input_name: str) -> int:
    """alpha's row of the edge from ``input_name`` into ``block`` (1-based)."""
    inputs = block_inputs(block)
    if input_name not in inputs:
        raise ValueError(f"block{block} cannot read {input_name!r}; it reads {inputs}")
    # Blocks before ``block`` have 2, 3, ..., block edges.
    return sum(i + 1 for i in range(1, block)) + inputs.index(input_name)


def consumers(input_name: str, blocks: int = 5) -> list[tuple[int, int]]:
    """The edges that read ``input_name``, as ``(block, alpha row)`` pairs in block order."""
    return [
        (i, edge_row(i, input_name)) for i in range(1, blocks + 1) if input_name in block_inputs(i)
    ]


def num_edges(blocks: int = 5) -> int:
    return sum(i + 1 for i in range(1, blocks + 1))


def count_cells(blocks: int = 5, num_ops: int = 8, *, distinct: bool = False) -> int:
    """Size of the cell search space.

    ``distinct=False`` counts as the paper does (5.6e14 for B = 5, 8 ops): each of a block's two
    inputs is chosen independently among its ``i + 1`` candidates with one of the ``num_ops``
    ops. ``distinct=True`` counts the different cells decoding can produce: an unordered pair of
    distinct inputs per block, each with a non-``none`` op.
    """
    total = 1
    for i in range(1, blocks + 1):
        candidates = i + 1
        if distinct:
            total *= candidates * (candidates - 1) // 2 * (num_ops - 1) ** 2
        else:
            total *= (candidates * num_ops) ** 2
    return total
