import json

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def bench(experiment_script):
    return experiment_script("bench_data")


def test_dataset_has_the_requested_size_and_classes(bench, tmp_path):
    bench.make_dataset(tmp_path, 3, 40, 72)
    images = sorted((tmp_path / "images" / "train").glob("*.jpg"))
    masks = sorted((tmp_path / "masks" / "train").glob("*.png"))
    assert [p.stem for p in images] == [p.stem for p in masks] == ["img0000", "img0001", "img0002"]
    for image, mask in zip(images, masks, strict=True):
        assert Image.open(image).size == Image.open(mask).size == (72, 40)
        assert np.asarray(Image.open(mask)).max() < bench.NUM_CLASSES
    classes = (tmp_path / "classes.txt").read_text().split()
    assert len(classes) == bench.NUM_CLASSES


def test_benchmark_times_each_worker_count_over_the_timed_epochs(bench, capsys):
    argv = ["--images", "4", "--height", "48", "--width", "64", "--crop", "32", "--batch", "2"]
    result = bench.main([*argv, "--workers", "0", "--epochs", "2", "--warmup", "1"])
    assert json.loads(capsys.readouterr().out) == result
    assert (result["image_size"], result["crop"], result["batch"]) == ([48, 64], 32, 2)
    (loader,) = result["loader"]
    assert loader["num_workers"] == 0
    assert len(loader["epoch_s"]) == 2  # the warm-up epoch is not timed
    # 4 samples per epoch (the search's loader drops a last partial batch) over the two timed
    # epochs; each epoch time is rounded to 1 ms, the rate to 0.01.
    total = sum(loader["epoch_s"])
    upper = 8 / (total - 0.001) if total > 0.001 else float("inf")
    assert 8 / (total + 0.001) - 0.005 <= loader["samples_per_s"] <= upper + 0.005
    assert loader["first_batch_s"] <= max(loader["epoch_s"])
    assert result["decode_ms"] > 0 and result["transform_ms"] > 0
