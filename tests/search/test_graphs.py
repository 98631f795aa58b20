"""CUDA graphs of the search steps (search.cuda_graphs): they compute what the eager steps
compute. The graph test needs a GPU (CI has none); the others run everywhere."""

import pytest
import torch

from autodeeplab import build_supernet
from autodeeplab.engine.runtime import deterministic_algorithms
from autodeeplab.search.bilevel import loss_and_gradients, weight_step
from autodeeplab.search.graphs import GraphedGradients, graphed_steps

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


def _net(device):
    torch.manual_seed(0)
    net = build_supernet(
        num_classes=3, layers=3, levels=3, filter_multiplier=2, blocks=3, stem_channels=(4, 4, 8)
    )
    return net.to(device).train()


def _buffers(net):
    return [b.detach().clone() for b in net.buffers()]


@cuda
@pytest.mark.parametrize("variant", ["fp32", "checkpoint", "bf16"])
def test_graphed_steps_compute_the_eager_losses_gradients_and_statistics(variant):
    # In float32 (TF32 where the library allows it by default), with checkpointing
    # (search.checkpoint: the backward pass recomputes each node inside the graph) and under
    # bf16 autocast (search.precision=bf16). With deterministic algorithms both run the same
    # kernels in the same order: the same numbers, bit for bit.
    with deterministic_algorithms():
        _compare_graphed_and_eager_steps(variant)


def _compare_graphed_and_eager_steps(variant):
    device = torch.device("cuda")
    net = _net(device)
    net.checkpoint_nodes = variant == "checkpoint"
    net.autocast_dtype = torch.bfloat16 if variant == "bf16" else None
    steps = [list(net.weight_parameters()), list(net.arch_parameters())]
    graphed = graphed_steps(net, steps, 255)
    generator = torch.Generator(device).manual_seed(1)
    batches = [
        (
            torch.randn(2, 3, 32, 32, device=device, generator=generator),
            torch.randint(0, 3, (2, 32, 32), device=device, generator=generator),
        )
        for _ in range(3)
    ]
    batches.append((batches[0][0][:1], batches[0][1][:1]))  # another shape: eager
    for images, target in batches:
        for params, step in zip(steps, graphed, strict=True):
            before = _buffers(net)
            loss, grads = loss_and_gradients(net, params, images, target, 255)
            after = _buffers(net)
            with torch.no_grad():
                for buffer, saved in zip(net.buffers(), before, strict=True):
                    buffer.copy_(saved)
            # The first call captures both graphs; their warm-up passes leave no trace: the
            # BatchNorm statistics move once, as in the eager pass.
            graph_loss, graph_grads = step(images, target)
            assert torch.equal(graph_loss, loss)
            for graph_grad, grad in zip(graph_grads, grads, strict=True):
                assert torch.equal(graph_grad, grad)
            for ours, theirs in zip(_buffers(net), after, strict=True):
                assert torch.equal(ours, theirs)
            # The parameters move between replays, as an optimiser moves them.
            with torch.no_grad():
                for param, grad in zip(params, grads, strict=True):
                    param.sub_(0.1 * grad)
    assert all(step.graph is not None for step in graphed)


def test_graphed_gradients_refuse_a_cpu_batch():
    net = _net("cpu")
    graphed = GraphedGradients(net, list(net.arch_parameters()), 255)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device; the batch is on cpu"):
        graphed(torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long))


def test_weight_step_takes_its_gradients_from_the_step_given():
    # What search.cuda_graphs passes: the weight step applies the gradients the given step
    # returns (here twice the eager ones, with half the learning rate) and frees them after.
    torch.manual_seed(0)
    plain, given = _net("cpu"), _net("cpu")
    images, target = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))

    def doubled(i, t):
        loss, grads = loss_and_gradients(given, list(given.weight_parameters()), i, t, 255)
        return loss, [2 * g for g in grads]

    losses = []
    for net, gradients, lr in ((plain, None, 0.2), (given, doubled, 0.1)):
        optimizer = torch.optim.SGD(net.weight_parameters(), lr=lr)
        options = {"ignore_index": 255, "grad_clip": None, "gradients": gradients}
        losses.append(weight_step(net, optimizer, images, target, **options))
        assert all(p.grad is None for p in net.weight_parameters())
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    for (name, a), b in zip(given.state_dict().items(), plain.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
