from math import comb, prod

from autodeeplab import PRIMITIVES, cell_edges
from autodeeplab.space.edges import block_inputs, consumers, edge_row


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


def test_size_of_the_cell_space():
    # The paper's count (5.6e14): each block picks each of its two inputs among its i+1
    # candidates with one of the 8 ops, independently.
    paper = prod(((i + 1) * len(PRIMITIVES)) ** 2 for i in range(1, 6))
    assert 5.5e14 < paper < 5.7e14
    # Distinct decodable cells: an unordered pair of inputs and a non-none op on each.
    distinct = prod(comb(i + 1, 2) * (len(PRIMITIVES) - 1) ** 2 for i in range(1, 6))
    assert distinct == 2700 * 49**5
