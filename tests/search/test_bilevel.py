"""The bilevel steps on a small net: the weight step's update and what it leaves behind."""

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab.search.bilevel import weight_step


def test_weight_step_applies_the_update_and_frees_the_weight_gradients():
    # The architecture step that follows must not carry the weight gradients (as large as
    # the weights) on top of its own activations.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 1))
    images, target = torch.randn(2, 3, 6, 6), torch.randint(0, 4, (2, 6, 6))
    target[0, 0, 0] = 255  # ignored
    before = [p.detach().clone() for p in net.parameters()]
    loss = F.cross_entropy(net(images), target, ignore_index=255)
    grads = torch.autograd.grad(loss, list(net.parameters()))

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    returned = weight_step(net, optimizer, images, target, ignore_index=255, grad_clip=None)

    assert returned == loss.item()
    for param, old, grad in zip(net.parameters(), before, grads, strict=True):
        torch.testing.assert_close(param.detach(), old - 0.1 * grad)
        assert param.grad is None


def test_gradients_only_for_restores_what_it_froze_and_nothing_else():
    from autodeeplab.search.bilevel import gradients_only_for

    net = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    net[2].weight.requires_grad_(False)  # frozen by the user
    with gradients_only_for(net, [net[0].weight]):
        assert [p.requires_grad for p in net.parameters()] == [True] + [False] * 5
    assert [p.requires_grad for p in net.parameters()] == [True] * 4 + [False, True]


def test_weight_step_clips_the_gradient_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 4, 1))
    images, target = torch.randn(2, 3, 6, 6), torch.randint(0, 4, (2, 6, 6))
    before = [p.detach().clone() for p in net.parameters()]
    loss = F.cross_entropy(net(images), target, ignore_index=255)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    norm = torch.cat([g.flatten() for g in grads]).norm()
    clip = float(norm) / 4  # well below the gradient's norm

    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    weight_step(net, optimizer, images, target, ignore_index=255, grad_clip=clip)

    for param, old, grad in zip(net.parameters(), before, grads, strict=True):
        torch.testing.assert_close(param.detach(), old - 0.1 * grad * clip / norm)


def test_validation_loss_is_the_mean_over_labelled_pixels_whatever_the_batch():
    from torch.utils.data import DataLoader, TensorDataset

    from autodeeplab.search.loop import evaluate

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
    images, target = torch.randn(5, 3, 6, 6), torch.randint(0, 4, (5, 6, 6))
    target[1, :5] = 255  # images with few and with many ignored pixels
    target[3, :, :2] = 255
    net.eval()
    with torch.no_grad():
        losses = F.cross_entropy(net(images), target, ignore_index=255, reduction="none")
    expected = losses[target != 255].mean().item()
    for batch_size in (1, 2, 5):
        loader = DataLoader(TensorDataset(images, target), batch_size=batch_size)
        scores = evaluate(net, loader, 4, 255, torch.device("cpu"))
        assert abs(scores["val_loss"] - expected) < 1e-6, batch_size
