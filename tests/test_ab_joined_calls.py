import json

import pytest


@pytest.mark.slow
def test_ab_compares_joined_and_separate_calls_of_the_same_supernet(capsys, experiment_script):
    ab = experiment_script("ab_joined_calls")
    small = ["--layers", "3", "--levels", "2", "--filter-multiplier", "2", "--blocks", "3"]
    result = ab.main([*small, "--classes", "3", "--crop", "16", "--pairs", "2", "--warmup", "1"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == result
    # Same weights and the same arithmetic per channel: the logits agree.
    assert result["max_logit_difference"] < 1e-5
    for name in ("joined_median_s", "separate_median_s", "joined_min_s", "separate_min_s"):
        assert result[name] > 0, name
    assert result["config"]["pairs"] == 2 and "median_ratio" in result and "min_ratio" in result


def test_separate_copy_makes_one_call_per_input_with_the_same_weights(experiment_script):
    from autodeeplab import build_supernet

    ab = experiment_script("ab_joined_calls")
    net = build_supernet(num_classes=3, layers=3, levels=2, filter_multiplier=2, blocks=3)
    other = ab.separate_calls(net)
    for node, copy in zip(net.nodes, other.nodes, strict=True):
        joined = 1 if node.cell.has_prev_prev else 0
        assert len(copy.cell.calls) == len(node.cell.calls) + joined
    for (name, a), b in zip(net.state_dict().items(), other.state_dict().values(), strict=True):
        assert a.equal(b), name
