import pytest
import torch
import torch.nn.functional as F

from autodeeplab import build_supernet
from autodeeplab.search.bilevel import gradients_only_for
from autodeeplab.space.reference import reference_forward


def _tiny(num_classes, layers, levels, blocks, filter_multiplier=2, partial_channels=1):
    return build_supernet(
        num_classes=num_classes,
        layers=layers,
        levels=levels,
        filter_multiplier=filter_multiplier,
        blocks=blocks,
        stem_channels=(4, 4, 8),
        aspp_channels=4,
        partial_channels=partial_channels,
    )


def _grads(net, x, forward):
    net.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = forward(x)
    target = torch.randint(
        0, net.num_classes, (x.shape[0], *x.shape[-2:]), generator=torch.Generator().manual_seed(1)
    ).to(x.device)
    F.cross_entropy(out, target).backward()
    grads = {name: p.grad.clone() for name, p in net.named_parameters() if p.grad is not None}
    return out.detach(), grads, x.grad


def _assert_same_step(step, ref_step, out_tol, grad_tol, x_tol):
    """``_grads`` results agree: the output, the same parameters' gradients and the input
    gradient, each within its ``(atol, rtol)``."""
    (out, grads, x_grad), (ref_out, ref_grads, ref_x_grad) = step, ref_step
    torch.testing.assert_close(out, ref_out, atol=out_tol[0], rtol=out_tol[1])
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(
            grads[name],
            ref_grads[name],
            atol=grad_tol[0],
            rtol=grad_tol[1],
            msg=lambda m, n=name: f"{n}: {m}",
        )
    torch.testing.assert_close(x_grad, ref_x_grad, atol=x_tol[0], rtol=x_tol[1])


@pytest.mark.parametrize(
    "layers,levels,blocks,size,partial",
    [(3, 3, 3, 32, 1), (2, 2, 5, 17, 1), (4, 4, 2, 40, 1), (3, 3, 3, 32, 2), (2, 3, 5, 19, 4)],
)
def test_fused_supernet_equals_plain_eq6_outputs_and_gradients(
    layers, levels, blocks, size, partial, device
):
    # partial > 1: PC-DARTS partial channels, against the plain per-edge slice-cat-shuffle.
    net = _tiny(3, layers, levels, blocks, 2 * partial, partial).to(device)
    with torch.no_grad():  # make alpha and beta far from uniform so mixing errors show
        net.alpha.normal_(0, 1)
        net.beta.normal_(0, 1)
    x = torch.randn(2, 3, size, size, device=device)
    step = _grads(net, x, net)
    assert step[0].shape == (2, 3, size, size)
    ref_step = _grads(net, x, lambda inp: reference_forward(net, inp))
    _assert_same_step(step, ref_step, (1e-5, 1e-4), (1e-5, 1e-3), (1e-6, 1e-3))


@pytest.mark.parametrize("partial", [1, 2])
def test_float64_eval_mode_equals_plain_eq6_to_rounding(partial, device):
    # Eval mode: both normalise with the cells' running statistics (warmed up first, so they
    # are far from 0 and 1). Float64 end to end: logits and every gradient, alpha's included,
    # agree to rounding, so nothing in between drops to float32.
    torch.manual_seed(0)
    net = _tiny(3, 3, 3, 3, 2 * partial, partial).double().to(device)
    with torch.no_grad():
        net.alpha.normal_(0, 1)
        net.beta.normal_(0, 1)
        for _ in range(3):
            net(torch.randn(2, 3, 24, 24, dtype=torch.float64, device=device) * 3 + 1)
    net.eval()
    x = torch.randn(2, 3, 24, 24, dtype=torch.float64, device=device)
    step = _grads(net, x, net)
    assert step[0].dtype == torch.float64
    ref_step = _grads(net, x, lambda inp: reference_forward(net, inp))
    _assert_same_step(step, ref_step, (1e-12, 1e-10), (1e-12, 1e-9), (1e-12, 1e-9))


def test_a_channels_last_input_gives_what_a_contiguous_one_gives():
    net = _tiny(3, 3, 3, 3)
    x = torch.randn(2, 3, 24, 24)
    step = _grads(net, x, net)
    last_step = _grads(net, x.contiguous(memory_format=torch.channels_last), net)
    float32 = (1e-5, 1.3e-6)  # assert_close's defaults for float32
    _assert_same_step(last_step, step, float32, float32, float32)


def test_every_valid_beta_entry_is_used_exactly_once_by_the_forward_pass():
    net = _tiny(3, 5, 4, 2)
    for node in net.nodes:  # node (l, s) reads beta[l - 1, s', d] with s' + d - 1 = s
        for layer, source, direction in node.beta_index.t().tolist():
            assert layer == node.layer - 1 and source + direction - 1 == node.level
    used = [tuple(col) for node in net.nodes for col in node.beta_index.t().tolist()]
    assert len(used) == len(set(used))
    assert set(used) == set(net.lattice.transitions)
    # ... and the forward pass reads exactly those: gradient w.r.t. normalised beta.
    bw = net.beta_weights().detach().requires_grad_()
    net.forward_with(torch.randn(2, 3, 32, 32), net.alpha_weights(), bw).square().mean().backward()
    mask = net.lattice.beta_mask()
    assert torch.all(bw.grad[~mask] == 0)
    assert torch.all(bw.grad[mask] != 0)


def test_gradients_reach_alpha_beta_and_weights_and_batch_size_one_works():
    net = _tiny(4, 3, 3, 3)
    net.train()
    out = net(torch.randn(1, 3, 24, 24))
    assert out.shape == (1, 4, 24, 24)
    F.cross_entropy(out, torch.randint(0, 4, (1, 24, 24))).backward()
    alpha, beta = net.arch_parameters()
    assert alpha.grad.abs().sum() > 0
    assert beta.grad[net.lattice.beta_mask()].abs().sum() > 0
    assert all(p.grad is not None for p in net.weight_parameters())


def test_a_training_input_that_shrinks_to_one_value_per_channel_is_refused_naming_it():
    net = _tiny(4, 2, 3, 2).train()  # coarsest level 2: stride 16
    with pytest.raises(
        ValueError,
        match=r"Supernet in training mode: an input of shape "
        r"\(1, 3, 16, 16\) leaves a 1x1 map at level 2.* at least 17 pixels",
    ):
        net(torch.randn(1, 3, 16, 16))
    assert net(torch.randn(1, 3, 16, 17)).shape == (1, 4, 16, 17)  # a 1x2 map: two values
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 4, 16, 16)
    assert net.eval()(torch.randn(1, 3, 16, 16)).shape == (1, 4, 16, 16)
    # Level s exists from layer s on: two layers of four levels reach level 2 only.
    shallow = _tiny(4, 2, 4, 2).train()
    assert shallow(torch.randn(1, 3, 32, 32)).shape == (1, 4, 32, 32)  # 2x2 at level 2
    with pytest.raises(ValueError, match=r"leaves a 1x1 map at level 2"):
        shallow(torch.randn(1, 3, 16, 16))


def test_arch_parameters_are_held_apart_from_the_weights():
    net = _tiny(4, 2, 2, 2)
    alpha, beta = net.arch_parameters()
    assert alpha.shape == (5, 8) and beta.shape == (2, 2, 3)
    weights = {id(p) for p in net.weight_parameters()}
    assert id(alpha) not in weights and id(beta) not in weights
    assert len(weights) + 2 == len(list(net.parameters()))


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"blocks": 0}, "supernet blocks=0: expected a positive integer"),
        ({"filter_multiplier": 0}, "filter_multiplier=0"),
        ({"num_classes": 0}, "num_classes=0"),
        ({"aspp_channels": 0}, "aspp_channels=0"),
        ({"layers": 2.0}, "layers=2.0"),
        ({"stem_channels": (4, 0, 8)}, r"stem_channels=\(4, 0, 8\): expected 3 positive"),
        ({"stem_channels": (4, 8)}, r"stem_channels=\(4, 8\): expected 3 positive"),
    ],
)
def test_bad_sizes_are_refused_naming_them(option, message):
    with pytest.raises(ValueError, match=message):
        build_supernet(**option)


def test_paper_space_shapes():
    net = build_supernet(num_classes=19)
    alpha, beta = net.arch_parameters()
    assert alpha.shape == (20, 8) and beta.shape == (12, 4, 3)
    assert len(net.nodes) == 45
    assert [h.dilation for h in net.heads] == [24, 12, 6, 3]
    convs = [h.atrous[0] for h in net.heads]
    assert [(c.dilation, c.padding) for c in convs] == [((d, d), (d, d)) for d in (24, 12, 6, 3)]
    # prev_prev edges are absent where H(l-2, s) does not exist
    absent = [(n.layer, n.level) for n in net.nodes if n.prev_prev is None]
    assert absent == [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3), (4, 3)]
    assert all("prev_prev" not in n.cell.readers for n in net.nodes if n.prev_prev is None)


def _step(net, x, target):
    net.zero_grad(set_to_none=True)
    out = net(x)
    F.cross_entropy(out, target).backward()
    return out.detach(), {
        n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None
    }


def test_activation_checkpointing_gives_the_same_step_and_batchnorm_statistics(device):
    torch.manual_seed(0)
    plain, ckpt = _tiny(3, 3, 3, 3).to(device), _tiny(3, 3, 3, 3).to(device)
    ckpt.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.alpha.normal_(0, 1)
        ckpt.alpha.copy_(plain.alpha)
    ckpt.checkpoint_nodes = True
    x = torch.randn(2, 3, 32, 32, device=device)
    target = torch.randint(0, 3, (2, 32, 32), device=device)
    out, grads = _step(plain, x, target)
    ckpt_out, ckpt_grads = _step(ckpt, x, target)
    torch.testing.assert_close(ckpt_out, out, atol=1e-6, rtol=1e-5)
    assert ckpt_grads.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(ckpt_grads[name], grads[name], atol=1e-6, rtol=1e-5)
    # The recomputation during backward must not update the running statistics a second time.
    for (name, a), b in zip(plain.state_dict().items(), ckpt.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, atol=1e-7, rtol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_bf16_autocast_keeps_arch_parameters_and_logits_float32(device):
    torch.manual_seed(0)
    net = _tiny(3, 2, 3, 3).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    target = torch.randint(0, 3, (2, 32, 32), device=device)
    _, grads = _step(net, x, target)
    net.autocast_dtype = torch.bfloat16
    out, bf16_grads = _step(net, x, target)
    assert out.dtype == torch.float32
    for name in ("alpha", "beta"):
        grad = bf16_grads[name]
        assert grad.dtype == torch.float32
        # bf16 keeps about 3 significant digits. The alpha gradient is a difference of nearly
        # equal per-op terms (softmax of near-uniform alpha), so its cosine to the fp32 gradient
        # varies with the seed (measured 0.76-0.99 over seeds 0-4; beta 0.97-1.0); a wrong or
        # lost gradient scores near 0.
        cosine = F.cosine_similarity(grad.flatten(), grads[name].flatten(), dim=0)
        assert cosine > (0.7 if name == "alpha" else 0.9), (name, cosine)
        # The cosine does not see the scale: a wrongly scaled gradient must fail here.
        ratio = grad.norm() / grads[name].norm()
        assert 0.5 < ratio < 2, (name, ratio)


def test_arch_gradients_with_frozen_weights_equal_the_full_backward(device):
    # The architecture step differentiates alpha and beta only; freezing the weights lets the
    # fused mixed ops skip the weight gradients, and must not change alpha's and beta's.
    torch.manual_seed(0)
    net = _tiny(3, 3, 3, 3).to(device)
    x = torch.randn(2, 3, 32, 32, device=device)
    target = torch.randint(0, 3, (2, 32, 32), device=device)
    arch = list(net.arch_parameters())
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    full = torch.autograd.grad(F.cross_entropy(net(x), target), arch)
    net.load_state_dict(state)  # the same BatchNorm statistics for the second pass
    with gradients_only_for(net, arch):
        assert not any(p.requires_grad for p in net.weight_parameters())
        frozen = torch.autograd.grad(F.cross_entropy(net(x), target), arch)
    assert all(p.requires_grad for p in net.parameters())  # restored
    for a, b in zip(frozen, full, strict=True):
        torch.testing.assert_close(a, b)


def test_partial_channels_shrink_the_mixed_ops_and_reject_non_divisors():
    full, partial = _tiny(3, 2, 3, 3, 4, 1), _tiny(3, 2, 3, 3, 4, 4)
    for a, b in zip(full.nodes, partial.nodes, strict=True):
        assert b.cell.mixed_channels * 4 == a.cell.mixed_channels == a.cell.channels
        for name, reader in a.cell.readers.items():
            small = b.cell.readers[name]
            assert small.atrous5.numel() * 16 == reader.atrous5.numel()
            assert small.sep3_depthwise.numel() * 4 == reader.sep3_depthwise.numel()
    x = torch.randn(1, 3, 24, 24)
    assert partial(x).shape == full(x).shape == (1, 3, 24, 24)
    with pytest.raises(ValueError, match="partial_channels=3: expected a positive divisor"):
        _tiny(3, 2, 3, 3, 4, 3)
