import itertools

import pytest
import torch

from autodeeplab.space.lattice import Lattice, normalise_beta


def test_nodes_of_the_paper_lattice():
    lat = Lattice(12, 4)
    assert lat.levels_at(0) == [0]
    assert lat.levels_at(1) == [0, 1]
    assert lat.levels_at(2) == [0, 1, 2]
    assert all(lat.levels_at(l) == [0, 1, 2, 3] for l in range(3, 13))
    assert len(lat.nodes) == 2 + 3 + 4 * 10


def test_transitions_match_an_independent_enumeration():
    lat = Lattice(12, 4)
    expected = set()
    for l in range(12):
        for s in range(4):
            if s > l:
                continue
            for d, t in enumerate((s - 1, s, s + 1)):
                if 0 <= t < 4:
                    expected.add((l, s, d))
    assert set(lat.transitions) == expected
    assert lat.beta_mask().sum().item() == len(expected)


@pytest.mark.parametrize("layers,levels", [(12, 4), (5, 3), (2, 4), (6, 1)])
def test_incoming_transitions_use_every_beta_entry_exactly_once(layers, levels):
    lat = Lattice(layers, levels)
    used = [(l - 1, source, d) for l, s in lat.nodes for source, d in lat.incoming(l, s)]
    assert len(used) == len(set(used))
    assert set(used) == set(lat.transitions)


def test_prev_prev_exists_only_where_the_node_two_layers_back_exists():
    lat = Lattice(12, 4)
    assert not lat.has_prev_prev(1, 0) and not lat.has_prev_prev(1, 1)
    assert lat.has_prev_prev(2, 0)  # the stem
    assert not lat.has_prev_prev(2, 1) and not lat.has_prev_prev(2, 2)
    assert lat.has_prev_prev(3, 1) and not lat.has_prev_prev(3, 2)
    assert not lat.has_prev_prev(4, 3) and lat.has_prev_prev(5, 3)


def _brute_force_paths(layers, levels):
    count = 0
    for steps in itertools.product((-1, 0, 1), repeat=layers):
        level, ok = 0, True
        for step in steps:
            level += step
            ok &= 0 <= level < levels
        count += ok
    return count


def test_path_counts():
    lat = Lattice(12, 4)
    assert lat.count_paths() == _brute_force_paths(12, 4) == 75025
    # The paper's 2.9e4 counts 11 free transitions.
    assert lat.count_paths(11) == 28657


def test_normalised_beta_is_a_transition_probability():
    lat = Lattice(12, 4)
    mask = lat.beta_mask()
    w = normalise_beta(torch.randn(12, 4, 3) * 3, mask)
    assert torch.all(w[~mask] == 0)
    sums = w.sum(-1)
    for l in range(12):
        for s in range(4):
            assert sums[l, s].item() == pytest.approx(1.0 if lat.exists(l, s) else 0.0, abs=1e-6)
    # boundary levels have exactly two directions
    assert mask[5, 0].tolist() == [False, True, True]
    assert mask[5, 3].tolist() == [True, True, False]


def test_bad_lattices_and_nodes_are_refused_naming_them():
    with pytest.raises(ValueError, match="layers must be >= 1, got 0"):
        Lattice(0, 4)
    with pytest.raises(ValueError, match="levels must be >= 1, got 0"):
        Lattice(3, 0)
    for node in ((0, 0), (2, 3), (13, 0)):
        with pytest.raises(ValueError, match=rf"node \({node[0]}, {node[1]}\) is not a cell node"):
            Lattice().incoming(*node)
