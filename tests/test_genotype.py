import json

import pytest

from autodeeplab import Genotype, GenotypeError
from autodeeplab.genotype import FORMAT, NAMED_GENOTYPES


def test_paper_genotype_matches_the_tf_builder():
    g = Genotype.named("paper")
    assert g.path == (0, 0, 0, 1, 2, 1, 2, 2, 3, 3, 2, 1)
    assert [(e.op, e.input) for e in g.cell[0]] == [
        ("atrous_conv_5x5", "prev_prev"),
        ("sep_conv_3x3", "prev"),
    ]
    assert [(e.op, e.input) for e in g.cell[4]] == [
        ("sep_conv_5x5", "block2"),
        ("atrous_conv_5x5", "block4"),
    ]


@pytest.mark.parametrize("name", sorted(NAMED_GENOTYPES))
def test_round_trip_through_a_file(tmp_path, name):
    g = Genotype.named(name)
    path = tmp_path / "genotype.json"
    text = g.to_json(path)
    assert json.loads(text)["format"] == FORMAT
    assert Genotype.from_json(path) == g
    assert json.loads(path.read_text()) == g.to_dict()


def test_meta_is_kept_but_not_compared(tmp_path):
    g = Genotype.named("paper")
    with_meta = Genotype(g.cell, g.path, {"epoch": 3})
    assert with_meta == g
    with_meta.to_json(tmp_path / "g.json")
    assert Genotype.from_json(tmp_path / "g.json").meta == {"epoch": 3}


def _write(tmp_path, data):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def _paper():
    return json.loads(json.dumps(NAMED_GENOTYPES["paper"]))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["cell"][0][0].update(op="conv_7x7"), "unknown op 'conv_7x7'"),
        (lambda d: d["cell"][0][0].update(op="none"), "unknown op 'none'"),
        (lambda d: d.pop("path"), "missing key 'path'"),
        (lambda d: d.pop("cell"), "missing key 'cell'"),
        (lambda d: d["cell"][1][0].pop("input"), "missing key 'input'"),
        (lambda d: d["cell"][1][0].update(input="block2"), "block2: input 'block2'"),
        (lambda d: d["cell"][0][1].update(input="block3"), "block1: input 'block3'"),
        (lambda d: d.update(path=[0, 0, 2, 2]), "jumps from level 0 to 2 at layer 3"),
        (lambda d: d.update(path=[1, 2, 3, 4]), "layer 4 has level 4"),
        (lambda d: d.update(path=[0, -1]), "level -1"),
        (lambda d: d.update(path=[2, 2]), "jumps from level 0 to 2 at layer 1"),
        (lambda d: d.update(format="v0"), "key 'format'"),
        (lambda d: d.update(path="0,1"), "key 'path' must be a list"),
    ],
)
def test_malformed_files_raise_clear_errors(tmp_path, mutate, message):
    data = _paper()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(GenotypeError) as err:
        Genotype.from_json(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unreadable_and_invalid_json(tmp_path):
    with pytest.raises(GenotypeError, match="cannot read"):
        Genotype.from_json(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.from_json(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b"\x80\x81\xff{}")  # e.g. a checkpoint passed by mistake
    with pytest.raises(GenotypeError, match=r"y.json: not a UTF-8 text file"):
        Genotype.from_json(tmp_path / "y.json")
    with pytest.raises(GenotypeError, match="unknown genotype name"):
        Genotype.named("nope")
    with pytest.raises(GenotypeError, match=r"is a directory; expected a genotype file$"):
        Genotype.from_json(tmp_path)
    Genotype.named("paper").to_json(tmp_path / "genotype.json")
    with pytest.raises(GenotypeError, match=r"\(a search run's is .*genotype.json\)"):
        Genotype.from_json(tmp_path)


def test_genotype_is_frozen():
    g = Genotype.named("paper")
    with pytest.raises(AttributeError):
        g.path = (0,)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["cell"][0][0].update(op=["sep_conv_3x3"]), "op must be a string"),
        (lambda d: d["cell"][0][0].update(input={"x": 1}), "input must be a string"),
        (lambda d: d["cell"][2].pop(), "block3 has 1 edges"),
        (lambda d: d["cell"][2].append({"op": "sep_conv_3x3", "input": "prev"}), "3 edges"),
        (lambda d: d["cell"][1][1].update(input="prev_prev"), "reads 'prev_prev' twice"),
        (lambda d: d.update(cell=[]), "non-empty list of blocks"),
        (lambda d: d.update(path=[0, 1.5]), "list of integers"),
    ],
)
def test_more_malformed_genotypes(tmp_path, mutate, message):
    data = _paper()
    mutate(data)
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(_write(tmp_path, data))


def test_constructor_validates_too():
    g = Genotype.named("paper")
    with pytest.raises(GenotypeError, match="exactly 2"):
        Genotype((g.cell[0][:1],) + g.cell[1:], g.path)
    with pytest.raises(GenotypeError, match="at least one block"):
        Genotype((), g.path)
    with pytest.raises(GenotypeError, match="jumps"):
        Genotype(g.cell, (0, 2))
    with pytest.raises(GenotypeError, match="block1: .* is not an edge; expected a pair"):
        Genotype(((("sep_conv_3x3", "prev", "x"),) * 2,) + g.cell[1:], g.path)
    with pytest.raises(GenotypeError, match="layer 4 has level 4; levels run 0..3"):
        Genotype(g.cell, (1, 2, 3, 4)).check_levels(4)


def test_edge_order_does_not_matter():
    data = _paper()
    for block in data["cell"]:
        block.reverse()
    reordered = Genotype.from_dict(data)
    assert reordered == Genotype.named("paper")
    assert reordered.to_json() == Genotype.named("paper").to_json()
    # edges come out in input order
    for b, block in enumerate(reordered.cell, start=1):
        order = ["prev_prev", "prev"] + [f"block{k}" for k in range(1, b)]
        assert [order.index(e.input) for e in block] == sorted(order.index(e.input) for e in block)
