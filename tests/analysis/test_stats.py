"""The numbers behind the figures, against hand computations, and the run they are read from."""

import math
import shutil

import numpy as np
import pytest
import torch

from autodeeplab import Genotype, Lattice, build_supernet, decode
from autodeeplab.analysis import (
    alpha_entropy,
    alpha_weights,
    beta_entropy,
    beta_probabilities,
    describe_changes,
    diff_genotypes,
    entropy,
    genotype_changes,
    load_run,
    mean_beta_entropy,
    smoke_search,
    stabilisation_epoch,
)
from autodeeplab.genotype import NAMED_GENOTYPES

PAPER = NAMED_GENOTYPES["paper"]


def _genotype(cell, path):
    return Genotype.from_dict({"format": PAPER["format"], "cell": cell, "path": path})


def _edge(op, source):
    return {"op": op, "input": source}


SMALL_A = [[_edge("sep_conv_3x3", "prev_prev"), _edge("skip_connect", "prev")]]
SMALL_B = [[_edge("sep_conv_5x5", "prev_prev"), _edge("skip_connect", "prev")]]


# -- entropy ----------------------------------------------------------------------------------
def test_entropy_of_known_distributions():
    assert entropy([0.25] * 4) == pytest.approx(math.log(4))
    assert entropy([1.0, 0.0, 0.0]) == 0.0
    p = [0.2, 0.3, 0.5]
    assert entropy(p) == pytest.approx(-sum(x * math.log(x) for x in p))
    np.testing.assert_allclose(entropy([[0.5, 0.5], [1.0, 0.0]]), [math.log(2), 0.0])


def test_alpha_weights_and_entropy_match_a_hand_softmax():
    alpha = np.zeros((2, 8))
    alpha[1, 3] = 2.0
    weights = alpha_weights(alpha)
    hand = [math.exp(2.0) / (7 + math.exp(2.0))] + [1 / (7 + math.exp(2.0))] * 7
    assert weights[1, 3] == pytest.approx(hand[0])
    assert weights[1, 0] == pytest.approx(hand[1])
    np.testing.assert_allclose(weights[0], 1 / 8)
    h = alpha_entropy(alpha)
    assert h[0] == pytest.approx(math.log(8))
    assert h[1] == pytest.approx(-sum(p * math.log(p) for p in hand[:1] + hand[1:]))
    np.testing.assert_allclose(alpha_entropy(alpha, normalised=True), h / math.log(8))
    # Many epochs at once: (epochs, edges, ops) -> (epochs, edges).
    assert alpha_entropy(np.stack([alpha, alpha])).shape == (2, 2)


def test_beta_entropy_over_existing_transitions_of_a_3x3_lattice():
    beta = np.zeros((3, 3, 3))
    beta[:, :, 0] = 50.0  # "finer" logits; they must not count where the transition is absent
    h = beta_entropy(beta)
    nan = math.nan
    l2, l3 = math.log(2), math.log(3)
    expected_uniform = np.array(
        [
            [l2, nan, nan],  # the stem: same, coarser
            [l2, l3, nan],  # layer 1: level 0 same/coarser; level 1 all three
            [l2, l3, l2],  # layer 2: level 2 has no coarser level
        ]
    )
    # Where "finer" exists its logit of 50 takes (almost) all the probability.
    expected = np.where(np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1]]) == 1, 0.0, expected_uniform)
    np.testing.assert_allclose(h, expected, atol=1e-12)
    np.testing.assert_allclose(beta_entropy(np.zeros((3, 3, 3))), expected_uniform)
    normalised = beta_entropy(np.zeros((3, 3, 3)), normalised=True)
    np.testing.assert_allclose(normalised, np.where(np.isnan(expected_uniform), nan, 1.0))
    assert mean_beta_entropy(np.zeros((3, 3, 3))) == pytest.approx((4 * l2 + 2 * l3) / 6)


def test_beta_entropy_of_a_known_node_and_of_a_history():
    beta = np.zeros((2, 2, 3))
    beta[0, 0] = [9.0, 0.0, math.log(3)]  # stem: same 1/4, coarser 3/4
    p = beta_probabilities(beta)
    np.testing.assert_allclose(p[0, 0], [0.0, 0.25, 0.75])
    assert beta_entropy(beta)[0, 0] == pytest.approx(
        -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    )
    history = np.stack([beta, np.zeros_like(beta)])
    np.testing.assert_allclose(beta_entropy(history)[0], beta_entropy(beta))
    assert mean_beta_entropy(history).shape == (2,)
    # One level: every node has a single transition, so no node has a choice.
    assert np.isnan(beta_entropy(np.zeros((2, 1, 3)))).all()


def test_statistics_take_live_architecture_parameters():
    """alpha and beta straight from a supernet (tensors that require grad), as in a notebook."""
    net = build_supernet(num_classes=5, layers=4, filter_multiplier=4, blocks=3)
    alpha, beta = net.arch_parameters()
    assert beta.requires_grad
    a, b = alpha.detach().double().numpy(), beta.detach().double().numpy()
    np.testing.assert_array_equal(alpha_entropy(alpha), alpha_entropy(a))
    np.testing.assert_array_equal(beta_probabilities(beta), beta_probabilities(b))
    np.testing.assert_array_equal(beta_entropy(beta), beta_entropy(b))
    assert mean_beta_entropy(beta) == mean_beta_entropy(b)
    # float32 softmax, float64 entropy
    np.testing.assert_allclose(entropy(torch.softmax(alpha, -1)), alpha_entropy(a), rtol=1e-6)


# -- genotype differences ---------------------------------------------------------------------
def test_diff_of_two_hand_made_genotypes():
    a = Genotype.named("paper")
    cell = [list(block) for block in PAPER["cell"]]
    cell[0] = [_edge("atrous_conv_3x3", "prev_prev"), _edge("sep_conv_3x3", "prev")]  # op only
    cell[2] = [_edge("sep_conv_3x3", "block2"), _edge("skip_connect", "block1")]  # inputs
    path = list(PAPER["path"])
    path[4] = 1  # layer 5: 2 -> 1
    b = _genotype(cell, path)
    diff = diff_genotypes(a, b)
    assert diff.blocks == (1, 3)
    assert diff.inputs == (3,)
    assert diff.ops == ((1, "prev_prev", "atrous_conv_5x5", "atrous_conv_3x3"),)
    assert diff.layers == (5,)
    assert not diff.same
    assert "block1 <- prev_prev: atrous_conv_5x5 -> atrous_conv_3x3" in diff.describe()
    assert diff_genotypes(a, a).same and diff_genotypes(a, a).describe() == "no change"
    with pytest.raises(ValueError, match="different spaces"):
        diff_genotypes(a, _genotype(SMALL_A, [0]))


def test_stabilisation_epoch_on_hand_made_sequences():
    a, b = _genotype(SMALL_A, [0, 1]), _genotype(SMALL_B, [0, 1])
    c = _genotype(SMALL_A, [0, 0])
    assert stabilisation_epoch([a, b, b, b], [1, 2, 3, 4]) == 2
    assert stabilisation_epoch([a, a, a], [1, 2, 3]) == 1
    assert stabilisation_epoch([a, b, a], [1, 2, 3]) == 3
    assert stabilisation_epoch([a, b, a, a], [5, 6, 7, 8]) == 7
    assert stabilisation_epoch([b, c, a], [1, 2, 3]) == 3  # a path change counts too
    with pytest.raises(ValueError, match="one genotype per epoch"):
        stabilisation_epoch([a, b], [1])
    changes = genotype_changes([a, b, b, c])
    assert [d.same for d in changes] == [False, True, False]
    assert changes[0].ops == ((1, "prev_prev", "sep_conv_3x3", "sep_conv_5x5"),)
    assert changes[2].layers == (2,)
    text = describe_changes([a, b, b, c], [1, 2, 3, 4])
    assert "epoch 2:" in text and "epoch 3:" not in text and text.endswith("stable from epoch 4")


# -- the run directory ------------------------------------------------------------------------
def test_load_run_reads_the_smoke_run(smoke_run, smoke_dir):
    run = smoke_run
    assert run.epochs == (1, 2, 3)
    assert run.alpha.shape == (3, 9, 8) and run.beta.shape == (3, 3, 3, 3)
    assert run.lattice == Lattice(3, 3) and run.blocks == 3
    assert run.direction_names == ("finer", "same", "coarser")
    assert [r["epoch"] for r in run.records] == [1, 2, 3]
    assert run.config["space"]["layers"] == 3 and run.config["data"]["options"]["num_classes"] == 5
    # Each epoch's genotype file agrees with decoding that epoch's logits.
    for i in range(3):
        assert run.genotypes[i] == decode(run.alpha[i], run.beta[i])
    assert run.genotype == run.genotypes[-1] == Genotype.from_json(smoke_dir / "genotype.json")
    assert run.index(-1) == 2 and run.index(1) == 0 and run.epoch_number(-2) == 2
    for bad in (0, 4, -4):
        with pytest.raises(ValueError, match="epoch"):
            run.index(bad)


@pytest.mark.parametrize(
    "missing", ["arch_history.npz", "metrics.jsonl", "genotypes/epoch_002.json"]
)
def test_load_run_names_the_missing_file(smoke_dir, tmp_path, missing):
    copy = tmp_path / "run"
    shutil.copytree(smoke_dir, copy)
    (copy / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"{copy} is not a .*'{missing}' is missing"):
        load_run(copy)


def test_a_failed_smoke_search_reports_why(smoke_dir):
    with pytest.raises(RuntimeError, match="already holds a run"):  # logged on stdout
        smoke_search(smoke_dir)


def test_load_run_reads_unfinished_runs_and_runs_started_from_python(smoke_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(smoke_dir, copy)
    (copy / "genotype.json").unlink()  # written only when the search ends
    shutil.rmtree(copy / ".hydra")  # written only by the command line
    run = load_run(copy)
    assert run.genotype == run.genotypes[-1] == Genotype.from_json(smoke_dir / "genotype.json")
    assert run.config == {}


def test_load_run_keeps_interpolations_it_cannot_resolve(smoke_dir, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(smoke_dir, copy)
    config = copy / ".hydra" / "config.yaml"
    config.write_text(config.read_text() + "where: ${oc.env:AUTODEEPLAB_TEST_UNSET}/data\n")
    monkeypatch.delenv("AUTODEEPLAB_TEST_UNSET", raising=False)
    config = load_run(copy).config
    assert config["where"] == "${oc.env:AUTODEEPLAB_TEST_UNSET}/data"
    assert config["data"]["options"]["num_classes"] == 5  # the others are still resolved
    monkeypatch.setenv("AUTODEEPLAB_TEST_UNSET", "/mnt")
    assert load_run(copy).config["where"] == "/mnt/data"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("arch_history.npz", b"", "arch_history.npz: not a readable .npz file"),
        ("arch_history.npz", b"PK\x03\x04 truncated", "arch_history.npz: not a readable .npz"),
        # A Git LFS pointer (numpy would take it for a pickle and suggest loading it unsafely).
        ("arch_history.npz", b"oid sha256:4d7a\nsize 40312\n", "not a zip archive"),
        (".hydra/config.yaml", b"a: [1, 2\n", "config.yaml: not a readable config file"),
        (".hydra/config.yaml", b"a: \x80\x81\n", "config.yaml: not a readable config file"),
        ("metrics.jsonl", b"\x80\x81{}\n", "metrics.jsonl: not a UTF-8 text file"),
    ],
)
def test_load_run_names_a_damaged_file(smoke_dir, tmp_path, name, content, message):
    copy = tmp_path / "run"
    shutil.copytree(smoke_dir, copy)
    (copy / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_run(copy)


def test_a_run_named_by_a_relative_path_keeps_its_name(smoke_dir, monkeypatch):
    monkeypatch.chdir(smoke_dir)
    assert load_run(".").name == smoke_dir.name
    monkeypatch.chdir(smoke_dir / "genotypes")
    assert load_run("..").name == smoke_dir.name


def test_load_run_of_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "genotype.json").write_text("{}")
    with pytest.raises(NotADirectoryError, match="genotype.json is a file; expected a search run"):
        load_run(tmp_path / "genotype.json")


def test_run_dir_from_env_reads_relative_paths_from_where_jupyter_started(tmp_path):
    from autodeeplab.analysis import run_dir_from_env

    started = str(tmp_path / "project")
    assert run_dir_from_env("RUN_DIR", {"PWD": started}) is None
    assert run_dir_from_env("RUN_DIR", {"RUN_DIR": "", "PWD": started}) is None
    relative = {"RUN_DIR": "runs/search/a", "PWD": started}
    assert run_dir_from_env("RUN_DIR", relative) == tmp_path / "project/runs/search/a"
    absolute = {"RUN_DIR": str(tmp_path / "b"), "PWD": started}
    assert run_dir_from_env("RUN_DIR", absolute) == tmp_path / "b"


def _rewrite_history(copy, **changes):
    path = copy / "arch_history.npz"
    with np.load(path) as data:
        arrays = {key: data[key] for key in data.files}
    arrays.update(changes)
    with open(path, "wb") as file:
        np.savez(file, **arrays)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epoch": np.array([1, 1, 3])}, r"epoch numbers \[1, 1, 3\]; expected increasing"),
        ({"epoch": np.array([1.5, 2.2, 3.9])}, "expected increasing integers"),
        ("op_names", r"op_names \[.*'skip'.*\]; expected \['none'"),
        ("object", "arch_history.npz: .*allow_pickle"),
        ("beta", "epoch_001.json: a genotype of 3 layers .* has 2 layers"),
    ],
)
def test_load_run_refuses_an_inconsistent_history_naming_the_file(
    smoke_dir, tmp_path, change, message
):
    copy = tmp_path / "run"
    shutil.copytree(smoke_dir, copy)
    with np.load(copy / "arch_history.npz") as data:
        beta, ops = data["beta"], data["op_names"]
    if change == "op_names":
        change = {"op_names": np.array([*ops[:-1], "skip"])}
    elif change == "object":
        change = {"op_names": np.array(list(ops), dtype=object)}
    elif change == "beta":
        change = {"beta": beta[:, :2]}  # two layers, while the genotypes have three
    _rewrite_history(copy, **change)
    with pytest.raises(ValueError, match=message):
        load_run(copy)
