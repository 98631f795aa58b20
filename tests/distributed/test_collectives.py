"""The collectives of ``autodeeplab.engine.distributed`` on 2 gloo processes, and the gradient
averaging of the bilevel steps against one process with the global batch."""

import pytest
import torch
from spawn_ranks import run_ranks
from torch import nn

from autodeeplab.engine import distributed
from autodeeplab.engine.metrics import ConfusionMatrix
from autodeeplab.search.bilevel import arch_step, weight_step


class _Toy(nn.Module):
    """A BatchNorm-free segmentation net (so a batch's loss is the mean of its samples') with
    weights and an architecture-like parameter ``alpha`` (a per-class bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 1))
        self.alpha = nn.Parameter(0.1 * torch.randn(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.alpha.view(1, -1, 1, 1)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(4, 3, 8, 8, generator=generator)
    return images, torch.randint(0, 4, (4, 8, 8), generator=generator)


def _steps(shard: slice) -> dict[str, torch.Tensor]:
    """A weight step then an architecture step on ``shard`` of the batch; the new parameters."""
    torch.manual_seed(0)
    net = _Toy()
    weights = torch.optim.SGD(net.body.parameters(), lr=0.5, momentum=0.9)
    arch = torch.optim.Adam([net.alpha], lr=0.1)
    images, target = _batch()
    weight_step(net, weights, images[shard], target[shard], ignore_index=255, grad_clip=0.5)
    arch_step(net, arch, images[shard], target[shard], ignore_index=255)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _collectives() -> dict:
    r = distributed.rank()
    out = {"rank": distributed.rank(), "world": distributed.world_size()}
    out["steps"] = _steps(slice(2 * r, 2 * r + 2))  # each rank half of the global batch of 4
    out["object"] = distributed.broadcast_object({"dir": f"runs/from_{r}"})
    out["gathered"] = distributed.all_gather_object(r * 10)
    out["average"] = distributed.average([float(r), 2.0 * r])
    out["total"] = distributed.total([1.0, float(r)])

    def fails() -> None:
        raise FileExistsError("rank 0 says no")

    try:
        distributed.run_on_main(fails)
    except FileExistsError as err:
        out["error"] = str(err)
    out["on_main"] = distributed.run_on_main(lambda: f"computed on {distributed.rank()}")

    torch.manual_seed(r)  # different weights and buffers on each rank
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2))
    net(torch.randn(3, 2, 4, 4))
    distributed.broadcast_module_(net, buffers_only=True)
    out["buffers"] = [b.clone() for b in net.buffers()]
    out["weight_before"] = net[0].weight.detach().clone()
    distributed.broadcast_module_(net)
    out["weight_after"] = net[0].weight.detach().clone()

    matrix = ConfusionMatrix(3)
    target = torch.tensor([[0, 1, 2, r]])
    matrix.update(torch.tensor([[r, 1, 1, 2]]), target)
    out["matrix"] = distributed.all_reduce_confusion_(matrix).matrix.clone()
    empty = ConfusionMatrix(3)
    if r == 0:  # a rank with an empty shard takes part too
        empty.update(torch.tensor([[2]]), torch.tensor([[0]]))
    out["empty"] = distributed.all_reduce_confusion_(empty).matrix.clone()
    distributed.barrier()
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """What each of 2 processes computed (one spawn for the tests here)."""
    return run_ranks(_collectives, tmp_path_factory.mktemp("ranks"))


def test_averaged_gradients_give_the_update_of_the_global_batch(ranks):
    single = _steps(slice(0, 4))
    r0, r1 = (r["steps"] for r in ranks)
    for name, value in single.items():
        assert torch.equal(r0[name], r1[name]), name  # the ranks agree exactly
        # ... and match one process with the whole batch up to float summation order
        torch.testing.assert_close(r0[name], value, rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert not torch.equal(single["alpha"], _Toy().alpha.detach())  # the steps moved alpha


def test_collectives_on_two_processes(ranks):
    r0, r1 = ranks
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["object"] == r1["object"] == {"dir": "runs/from_0"}
    assert r0["gathered"] == r1["gathered"] == [0, 10]
    assert r0["average"] == r1["average"] == [0.5, 1.0]
    assert r0["total"] == r1["total"] == [2.0, 1.0]
    assert r0["error"] == r1["error"] == "rank 0 says no"
    assert r0["on_main"] == r1["on_main"] == "computed on 0"
    for a, b in zip(r0["buffers"], r1["buffers"]):
        assert torch.equal(a, b)
    assert not torch.equal(r0["weight_before"], r1["weight_before"])  # buffers only
    assert torch.equal(r0["weight_after"], r1["weight_after"])
    expected = ConfusionMatrix(3)
    expected.update(torch.tensor([[0, 1, 1, 2]]), torch.tensor([[0, 1, 2, 0]]))
    expected.update(torch.tensor([[1, 1, 1, 2]]), torch.tensor([[0, 1, 2, 1]]))
    assert torch.equal(r0["matrix"], expected.matrix) and torch.equal(r1["matrix"], r0["matrix"])
    assert r0["empty"].sum() == r1["empty"].sum() == 1


def test_a_single_process_is_left_alone():
    """No process group: the identity, and no collective is attempted."""
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    grads = [torch.ones(3)]
    distributed.all_reduce_mean_(grads)
    assert torch.equal(grads[0], torch.ones(3))
    assert distributed.average([1.5, 2]) == [1.5, 2]
    assert distributed.broadcast_object("x") == "x" and distributed.all_gather_object(3) == [3]
    matrix = ConfusionMatrix(2)
    assert distributed.all_reduce_confusion_(matrix) is matrix
    device = torch.device("cuda")
    assert distributed.local_device(device) is device

    def fails() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        distributed.run_on_main(fails)
