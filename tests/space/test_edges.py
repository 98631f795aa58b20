import itertools
from math import prod

import pytest

from autodeeplab import PRIMITIVES, cell_edges
from autodeeplab.space.edges import block_inputs, consumers, count_cells, edge_row


def test_cell_edges_names_and_order():
    edges = cell_edges(5)
    assert len(edges) == 20
    assert edges[:5] == [
        "block1<-prev_prev",
        "block1<-prev",
        "block2<-prev_prev",
        "block2<-prev",
        "block2<-block1",
    ]
    assert edges[-1] == "block5<-block4"
    for i, name in enumerate(edges):
        block, source = name.split("<-")
        assert edge_row(int(block[5:]), source) == i


def test_consumers_cover_every_edge_once():
    rows = [row for name in block_inputs(5) for _, row in consumers(name, 5)]
    assert sorted(rows) == list(range(20))


def _enumerate_decodable_cells(blocks, num_ops):
    """Every distinct decoded cell: per block an unordered pair of inputs, non-none ops."""
    per_block = []
    for i in range(1, blocks + 1):
        choices = set()
        for a, b in itertools.combinations(block_inputs(i), 2):
            for op_a, op_b in itertools.product(range(1, num_ops), repeat=2):
                choices.add(frozenset({(a, op_a), (b, op_b)}))
        per_block.append(len(choices))
    return prod(per_block)


def _enumerate_paper_choices(blocks, num_ops):
    per_block = [
        len(list(itertools.product(itertools.product(block_inputs(i), range(num_ops)), repeat=2)))
        for i in range(1, blocks + 1)
    ]
    return prod(per_block)


@pytest.mark.parametrize("blocks,num_ops", [(1, 3), (2, 3), (3, 4)])
def test_cell_counts_match_enumeration(blocks, num_ops):
    assert count_cells(blocks, num_ops) == _enumerate_paper_choices(blocks, num_ops)
    assert count_cells(blocks, num_ops, distinct=True) == _enumerate_decodable_cells(
        blocks, num_ops
    )


def test_size_of_the_paper_cell_space():
    assert 5.5e14 < count_cells(5, len(PRIMITIVES)) < 5.7e14  # the paper's 5.6e14
    assert count_cells(5, len(PRIMITIVES), distinct=True) == 2700 * 49**5
