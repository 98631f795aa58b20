import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from autodeeplab import PRIMITIVES, decode
from autodeeplab.decode import decode_cell, transition_probabilities, viterbi_path
from autodeeplab.genotype import Edge
from autodeeplab.space.edges import edge_row
from autodeeplab.space.lattice import Lattice

OP = {name: i for i, name in enumerate(PRIMITIVES)}


def _brute_force(beta):
    layers, levels, _ = beta.shape
    p = transition_probabilities(beta)
    best, best_path = -1.0, None
    for steps in itertools.product((-1, 0, 1), repeat=layers):
        level, prob, path = 0, 1.0, []
        for l, step in enumerate(steps):
            target = level + step
            if not 0 <= target < levels:
                prob = 0.0
                break
            prob *= p[l, level, step + 1]
            level = target
            path.append(level)
        if prob > best:
            best, best_path = prob, tuple(path)
    return best_path, best


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_agrees_with_brute_force_over_all_paths(seed):
    beta = np.random.default_rng(seed).normal(scale=2.0, size=(12, 4, 3))
    path, prob = viterbi_path(torch.tensor(beta))
    bf_path, bf_prob = _brute_force(beta)
    assert path == bf_path
    assert prob == pytest.approx(bf_prob, rel=1e-9)


def test_viterbi_small_lattices_and_probability_normalisation():
    beta = np.random.default_rng(7).normal(size=(5, 3, 3))
    path, prob = viterbi_path(beta)
    assert (path, pytest.approx(prob)) == _brute_force(beta)
    # Probabilities of all paths sum to one: beta is a transition probability.
    p = transition_probabilities(beta)
    total = 0.0
    for steps in itertools.product((-1, 0, 1), repeat=5):
        level, prob = 0, 1.0
        for l, step in enumerate(steps):
            if not 0 <= level + step < 3:
                prob = 0.0
                break
            prob *= p[l, level, step + 1]
            level += step
        total += prob
    assert total == pytest.approx(1.0)


def test_viterbi_follows_a_strong_hand_made_path():
    target = [0, 1, 2, 3, 3, 2, 1, 1, 2, 3, 3, 3]
    beta = np.zeros((12, 4, 3))
    level = 0
    for l, t in enumerate(target):
        beta[l, level, t - level + 1] = 10.0
        level = t
    path, prob = viterbi_path(beta)
    assert list(path) == target
    assert prob > 0.99**12 * 0.9


def _alpha_with(choices):
    """choices: {(block, input): (op, strength)} on top of a flat alpha."""
    alpha = np.zeros((20, len(PRIMITIVES)))
    for (block, source), (op, logit) in choices.items():
        alpha[edge_row(block, source), OP[op]] = logit
    return alpha


def test_cell_rule_top2_edges_argmax_op_without_none_in_input_order():
    alpha = _alpha_with(
        {
            (1, "prev"): ("sep_conv_3x3", 3.0),
            (1, "prev_prev"): ("atrous_conv_5x5", 2.0),
            (2, "block1"): ("max_pool_3x3", 4.0),
            (2, "prev_prev"): ("skip_connect", 3.0),
            (2, "prev"): ("avg_pool_3x3", 1.0),
            (3, "block2"): ("sep_conv_5x5", 2.0),
            (3, "prev"): ("atrous_conv_3x3", 1.5),
            (4, "block3"): ("sep_conv_3x3", 1.0),
            (4, "block1"): ("sep_conv_3x3", 1.0),
            (5, "block4"): ("atrous_conv_3x3", 5.0),
            (5, "prev"): ("sep_conv_5x5", 5.0),
        }
    )
    # `none` dominates an edge but never counts as its strength or its op.
    alpha[edge_row(3, "block1"), OP["none"]] = 50.0
    cell = decode_cell(alpha)
    assert cell[0] == (Edge("atrous_conv_5x5", "prev_prev"), Edge("sep_conv_3x3", "prev"))
    assert cell[1] == (Edge("skip_connect", "prev_prev"), Edge("max_pool_3x3", "block1"))
    assert cell[2] == (Edge("atrous_conv_3x3", "prev"), Edge("sep_conv_5x5", "block2"))
    # equal strengths: kept in input order
    assert cell[3] == (Edge("sep_conv_3x3", "block1"), Edge("sep_conv_3x3", "block3"))
    assert cell[4] == (Edge("sep_conv_5x5", "prev"), Edge("atrous_conv_3x3", "block4"))


def test_ties_go_to_the_lower_edge_index():
    cell = decode_cell(np.zeros((20, len(PRIMITIVES))))
    for block in cell:
        assert [e.input for e in block] == ["prev_prev", "prev"]
        assert all(e.op == "max_pool_3x3" for e in block)  # first non-none column


def test_edges_whose_ops_weigh_the_same_in_another_order_tie():
    # Every edge holds the same logits in its own order (`none` fixed): all strengths are equal,
    # though their softmax weights can differ in the last bit. Ties keep the first two inputs.
    rng = np.random.default_rng(0)
    for _ in range(20):
        logits = rng.normal(scale=3.0, size=len(PRIMITIVES))
        alpha = np.tile(logits, (20, 1))
        real = [i for i in range(len(PRIMITIVES)) if i != OP["none"]]
        for row in alpha:
            row[real] = rng.permutation(row[real])
        for block in decode_cell(alpha):
            assert [e.input for e in block] == ["prev_prev", "prev"]


def test_viterbi_ties_go_to_the_lower_level():
    # Uniform beta on 2 layers x 2 levels: all four paths have probability 1/4.
    assert viterbi_path(np.zeros((2, 2, 3))) == ((0, 0), 0.25)
    # Level 1 is the only likely end, reached with equal probability from level 0 (coarser)
    # and from level 1 (same): the node keeps the lower predecessor.
    beta = np.zeros((2, 2, 3))
    beta[1, 0] = [0.0, 0.0, 10.0]  # from level 0: coarser
    beta[1, 1] = [0.0, 10.0, 0.0]  # from level 1: same (finer is the other direction)
    path, probability = viterbi_path(beta)
    assert path == (0, 1)
    assert math.isclose(probability, 0.5 / (1 + math.exp(-10)))


def _exact_best_paths(weights, mask):
    """All most probable paths, exactly: node (l, s) moves in direction d with probability
    ``weights[l, s, d]`` over the sum of its existing directions' weights (integers)."""
    layers, levels, _ = weights.shape
    scored = []
    for steps in itertools.product((-1, 0, 1), repeat=layers):
        level, probability, path = 0, Fraction(1), []
        for l, step in enumerate(steps):
            if not mask[l, level, step + 1]:
                probability = Fraction(0)
                break
            total = sum(int(w) for w, m in zip(weights[l, level], mask[l, level]) if m)
            probability *= Fraction(int(weights[l, level, step + 1]), total)
            level += step
            path.append(level)
        scored.append((probability, tuple(path)))
    best = max(probability for probability, _ in scored)
    return [path for probability, path in scored if probability == best]


def test_viterbi_breaks_exact_ties_by_its_rule_despite_rounding():
    # Logits 0 or log 3 make every path's probability an exact fraction, with many ties. Their
    # log-sums can differ in the last bit (e.g. -1.8971199848858811 against ...813 for the
    # first case below); the rule still decides: lowest final level, then at each layer back
    # the lowest predecessor, i.e. the smallest path read backwards.
    rng = np.random.default_rng(0)
    cases = [np.array([[[1, 0, 0], [0, 0, 1], [0, 1, 1], [0, 1, 0]],
                       [[0, 1, 1], [1, 0, 0], [0, 1, 0], [0, 1, 1]],
                       [[0, 1, 1], [0, 1, 0], [1, 1, 0], [0, 1, 1]]])]  # fmt: skip
    cases += [rng.integers(0, 2, size=(layers, 4, 3)) for layers in (3, 4, 5, 6) for _ in range(40)]
    tied = 0
    for flags in cases:
        mask = Lattice(flags.shape[0], 4).beta_mask().numpy()
        best = _exact_best_paths(np.where(flags == 1, 3, 1), mask)
        tied += len(best) > 1
        path, probability = viterbi_path(flags * math.log(3.0))
        assert path == min(best, key=lambda p: p[::-1]), flags.tolist()
    assert tied > 50  # the cases do exercise ties


def test_decode_is_pure_and_records_the_path_probability():
    alpha, beta = torch.randn(20, 8), torch.randn(12, 4, 3)
    before = (alpha.clone(), beta.clone())
    g = decode(alpha, beta)
    assert torch.equal(alpha, before[0]) and torch.equal(beta, before[1])
    assert g == decode(alpha.numpy(), beta.numpy())
    assert math.isclose(g.meta["path_probability"], viterbi_path(beta)[1])
    assert len(g.cell) == 5 and len(g.path) == 12


def test_decoder_reads_every_valid_beta_entry_and_no_other():
    lattice = Lattice(12, 4)
    mask = lattice.beta_mask().numpy()
    beta = np.random.default_rng(3).normal(size=(12, 4, 3))
    noisy = beta.copy()
    noisy[~mask] = np.random.default_rng(4).normal(scale=100.0, size=(~mask).sum())
    assert viterbi_path(noisy) == viterbi_path(beta)
    # The path probability is the product of one normalised entry per layer along the path.
    path, prob = viterbi_path(beta)
    p = transition_probabilities(beta)
    level, expected = 0, 1.0
    for l, target in enumerate(path):
        expected *= p[l, level, target - level + 1]
        level = target
    assert prob == pytest.approx(expected, rel=1e-12)
    # Every valid entry can decide the path: making it dominant puts it on the path.
    for l, s, d in lattice.transitions:
        forced = beta.copy()
        forced[l, s, d] = 60.0
        # lead the path to (l, s) with equally dominant entries
        level = 0
        for k in range(l):
            step = 1 if level < s else 0
            forced[k, level, step + 1] = 60.0
            level += step
        if level != s:
            continue  # (l, s) unreachable in l steps from the stem: not a node
        path, _ = viterbi_path(forced)
        assert (path[l - 1] if l else 0) == s and path[l] == s + d - 1


def test_numpy_and_torch_beta_normalisations_agree():
    from autodeeplab.space.lattice import Lattice, normalise_beta

    lattice = Lattice(12, 4)
    beta = torch.randn(12, 4, 3) * 4
    beta[~lattice.beta_mask()] = 1e6  # garbage in entries that are not transitions
    torch.testing.assert_close(
        torch.from_numpy(transition_probabilities(beta.numpy())).float(),
        normalise_beta(beta, lattice.beta_mask()),
    )


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_diverged_search_is_refused_not_decoded(value):
    alpha, beta = torch.randn(20, len(PRIMITIVES)), torch.randn(3, 4, 3)
    bad_alpha = alpha.clone()
    bad_alpha[7, 2] = value
    with pytest.raises(
        ValueError, match=r"alpha has 1 non-finite entries \(the first at index \(7, 2\)"
    ):
        decode(bad_alpha, beta)
    bad_beta = beta.clone()
    bad_beta[2, 1, 0] = value  # a real transition: level 1 -> 0 at layer 3
    with pytest.raises(ValueError, match=r"beta has 1 non-finite entries .*index \(2, 1, 0\)"):
        decode(alpha, bad_beta)
    # Entries of transitions the lattice does not have are never read.
    unused = beta.clone()
    unused[0, 3, :] = value
    assert decode(alpha, unused) == decode(alpha, beta)


def test_keep_takes_the_strongest_edges_of_each_block():
    rng = np.random.default_rng(3)
    alpha = rng.normal(size=(14, len(PRIMITIVES)))  # 4 blocks
    weights = np.exp(alpha) / np.exp(alpha).sum(1, keepdims=True)
    for keep in (1, 3):
        cell = decode_cell(alpha, keep=keep)
        for block, edges in enumerate(cell, start=1):
            inputs = ["prev_prev", "prev", *(f"block{i}" for i in range(1, block))]
            strength = {name: weights[edge_row(block, name), 1:].max() for name in inputs}
            strongest = sorted(inputs, key=lambda name: -strength[name])[:keep]
            assert [e.input for e in edges] == [name for name in inputs if name in strongest]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: decode_cell(np.zeros((5, 3))), r"alpha must have shape \(edges, 8\)"),
        (lambda: decode_cell(np.zeros((6, 8))), "alpha has 6 rows, which is no cell's edge count"),
        (lambda: viterbi_path(np.zeros((3, 4))), r"beta must have shape \(layers, levels, 3\)"),
        (
            lambda: transition_probabilities(np.zeros((3, 4, 2))),
            r"beta must have shape \(layers, levels, 3\)",
        ),
    ],
)
def test_bad_shapes_are_refused_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()
