import copy
from collections.abc import Callable

import pytest
import torch
from torch.func import functional_call

from autodeeplab.ops import OPS, PRIMITIVES
from autodeeplab.space import mixed
from autodeeplab.space.mixed import InputEdges, live_taps, merge_atrous


def _bn_buffers(module: InputEdges, path: int, edge: int, op: str) -> dict[str, torch.Tensor]:
    """Views of ``module``'s BatchNorm statistics of (path, edge, op), named as in ``OPS[op]``."""
    p, e, c = module.paths, module.edges, module.channels
    if op.startswith("sep_conv"):
        kernel = 0 if op == "sep_conv_3x3" else 1
        return {
            f"{unit}.bn.{stat}": getattr(module.sep_bn[unit], stat).view(2, p, e, c)[
                kernel, path, edge
            ]
            for unit in range(2)
            for stat in ("running_mean", "running_var")
        }
    if op.startswith("atrous_conv"):
        kernel = 0 if op == "atrous_conv_3x3" else 1
        return {
            f"bn.{stat}": getattr(module.atrous_bn, stat).view(2, p, e, c)[kernel, path, edge]
            for stat in ("running_mean", "running_var")
        }
    return {}


def _plain(
    module: InputEdges,
    x: torch.Tensor,
    weights: torch.Tensor,
    buffers: Callable[[int, int, str], dict[str, torch.Tensor]] = lambda path, edge, op: {},
    training: bool = True,
) -> torch.Tensor:
    """sum_k weights[e, k] * op_k(x_p), one op module call per (path, edge, op); ``buffers``
    gives each op module's BatchNorm statistics (default: its own, fresh)."""
    n, _, h, w = x.shape
    p, e, c = module.paths, module.edges, module.channels
    templates = {op: OPS[op](c, 1, False).train(training).to(x.device) for op in PRIMITIVES}
    paths = []
    for path in range(p):
        xp = x[:, path * c : (path + 1) * c]
        edges = []
        for edge in range(e):
            total = torch.zeros(n, c, h, w, device=x.device)
            for k, op in enumerate(PRIMITIVES):
                if op != "none":
                    tensors = {**module.op_parameters(edge, op), **buffers(path, edge, op)}
                    out = functional_call(templates[op], tensors, (xp,))
                    total = total + weights[edge, k] * out
            edges.append(total)
        paths.append(torch.stack(edges, dim=1))
    return torch.stack(paths, dim=1)


@pytest.mark.parametrize("library_grads", [False, True])
@pytest.mark.parametrize("merge_atrous", [True, False])
@pytest.mark.parametrize(
    "h,w", [(1, 1), (2, 2), (1, 3), (2, 5), (4, 4), (3, 6), (5, 5), (9, 7), (16, 16)]
)
def test_input_edges_equal_plain_ops_on_small_and_odd_maps(
    h, w, merge_atrous, library_grads, monkeypatch, device
):
    # Small maps are where kernel taps that only read padding are dropped. Both atrous convs
    # run as one call (3x3 padded to the 5x5's window) or, where their windows differ, as two.
    # The conv gradients come from the CPU-tuned forms or, as on a GPU, from the library's
    # convolution_backward (library_grads; what a GPU does whatever this says).
    limit = float("inf") if merge_atrous else 0.0
    monkeypatch.setattr(mixed, "ATROUS_MERGE_MAX_EXTRA_FLOPS", limit)
    if library_grads:
        monkeypatch.setattr(mixed, "library_conv_gradients", lambda device: True)
    elif device.type != "cpu":
        pytest.skip("a GPU always takes the library's conv gradients")
    torch.manual_seed(0)
    module = InputEdges(channels=4, edges=3, paths=2).to(device)
    x = torch.randn(2, 8, h, w, device=device, requires_grad=True)
    weights = torch.softmax(torch.randn(3, len(PRIMITIVES), device=device), -1).requires_grad_()
    grad_out = torch.randn(2, 2, 3, 4, h, w, device=device)
    inputs = [x, weights, *module.parameters()]

    fused = module(x, weights)
    fused_grads = torch.autograd.grad(fused, inputs, grad_out)
    plain = _plain(module, x, weights)
    plain_grads = torch.autograd.grad(plain, inputs, grad_out)

    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)
    names = ["x", "weights", *(name for name, _ in module.named_parameters())]
    for name, a, b in zip(names, fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("reduced", [False, True])  # the library's kernel, or reductions
def test_input_edges_batchnorm_statistics_and_eval_mode_equal_plain_ops(reduced, monkeypatch):
    monkeypatch.setattr(mixed, "REDUCED_BN_MIN_SIZE", 0 if reduced else float("inf"))
    size = 6
    torch.manual_seed(0)
    module = InputEdges(channels=4, edges=3, paths=2)
    x = torch.randn(2, 8, size, size, requires_grad=True)
    weights = torch.softmax(torch.randn(3, len(PRIMITIVES)), -1).requires_grad_()
    plain_stats = InputEdges(channels=4, edges=3, paths=2)  # only its (fresh) BN buffers
    for _ in range(2):  # training: both update the running statistics the same way
        module(x, weights)
        _plain(module, x, weights, lambda path, edge, op: _bn_buffers(plain_stats, path, edge, op))
    for (name, ours), theirs in zip(module.named_buffers(), plain_stats.buffers(), strict=True):
        if "running" in name:
            torch.testing.assert_close(ours, theirs, msg=lambda m, n=name: f"{n}: {m}")

    # Eval mode: the running statistics normalise, outputs and gradients still agree.
    module.eval()
    grad_out = torch.randn(2, 2, 3, 4, size, size)
    inputs = [x, weights, *module.parameters()]
    fused = module(x, weights)
    plain = _plain(
        module, x, weights, lambda path, edge, op: _bn_buffers(module, path, edge, op), False
    )
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-4)
    fused_grads = torch.autograd.grad(fused, inputs, grad_out)
    plain_grads = torch.autograd.grad(plain, inputs, grad_out)
    for a, b in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 100.0])  # 100: a mean far above the std
def test_reduced_batchnorm_is_as_accurate_as_the_library_kernel(offset):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8, 9) * torch.rand(1, 6, 1, 1) + offset
    stats = [torch.rand(6), torch.rand(6) + 0.5]
    native_stats = [s.clone() for s in stats]
    out, mean, invstd = mixed._batch_norm_reduced(x, *stats, 0.1, 1e-5)
    native = torch.ops.aten.native_batch_norm(x, None, None, *native_stats, True, 0.1, 1e-5)

    # Against float64 statistics, ours err no more than the library's kernel (with a mean
    # of 100 both lose the same digits in the float32 ``x - mean``), give or take one float32
    # rounding step of the mean (errors come in such steps; which way a sum's last step
    # rounds differs between CPUs' kernels), and of the output through ``invstd``.
    x64 = x.double()
    mean64, var64 = x64.mean((0, 2, 3)), x64.var((0, 2, 3), unbiased=False)
    invstd64 = (var64 + 1e-5).rsqrt()
    out64 = (x64 - mean64.view(1, 6, 1, 1)) * invstd64.view(1, 6, 1, 1)
    step = torch.finfo(torch.float32).eps * mean64.abs().max().item()
    for ours, theirs, exact, slack in [
        (out, native[0], out64, step * invstd64.max().item()),
        (mean, native[1], mean64, step),
    ]:
        assert (ours - exact).abs().max() <= 1.5 * (theirs - exact).abs().max() + slack + 1e-6
    torch.testing.assert_close(invstd.double(), invstd64, rtol=1e-6, atol=0)
    # The running statistics move as the library's kernel moves them (unbiased variance).
    for a, b in zip(stats, native_stats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_input_edges_with_frozen_weights_give_the_same_input_and_op_weight_gradients():
    # The architecture step freezes the weights; the fused backward then skips their gradients.
    torch.manual_seed(0)
    module = InputEdges(channels=4, edges=3, paths=2)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    weights = torch.softmax(torch.randn(3, len(PRIMITIVES)), -1).requires_grad_()
    grad_out = torch.randn(2, 2, 3, 4, 5, 5)
    full = torch.autograd.grad(module(x, weights), [x, weights], grad_out)
    for param in module.parameters():
        param.requires_grad_(False)
    frozen = torch.autograd.grad(module(x, weights), [x, weights], grad_out)
    for a, b in zip(frozen, full, strict=True):
        torch.testing.assert_close(a, b)
    assert all(param.grad is None for param in module.parameters())


@pytest.mark.parametrize("size", [2, 8])
def test_separable_weight_gradients_become_grad_without_a_copy(size):
    # The fused backward hands autograd each separable weight's gradient in the parameter's
    # own layout, so it is stored as ``.grad`` as it is (a strided slice would be cloned). The
    # depthwise convs run on a 3x3 window on a 2x2 map (the 5x5's gradient is then padded, the
    # 3x3's is a slice of a stack), on a 5x5 window from 5x5 maps (the other way round).
    torch.manual_seed(0)
    module = InputEdges(channels=4, edges=3, paths=2)
    x = torch.randn(2, 8, size, size)
    weights = torch.softmax(torch.randn(3, len(PRIMITIVES)), -1)
    names = ("sep3_depthwise", "sep3_pointwise", "sep5_depthwise", "sep5_pointwise")
    incoming = {}
    for name in names:  # records where each incoming gradient lives (not the tensor itself)
        getattr(module, name).register_hook(
            lambda grad, name=name: incoming.__setitem__(name, grad.data_ptr())
        )
    module(x, weights).square().sum().backward()
    for name in names:
        assert getattr(module, name).grad.data_ptr() == incoming[name], name


@pytest.mark.parametrize("size", [(3, 3), (5, 5), (1, 5), (5, 3)])
@pytest.mark.parametrize("window", [(1, 1), (3, 3), (5, 5), (3, 5), (1, 3)])
def test_fit_crops_and_pads_the_centred_window(size, window):
    torch.manual_seed(0)
    weight = torch.randn(2, 3, *size)
    (h, w), (kh, kw) = size, window
    # Independently: place both centred in a canvas large enough for either, read the window.
    big_h, big_w = max(h, kh), max(w, kw)
    canvas = torch.zeros(2, 3, big_h, big_w)
    top, left = (big_h - h) // 2, (big_w - w) // 2
    canvas[..., top : top + h, left : left + w] = weight
    top, left = (big_h - kh) // 2, (big_w - kw) // 2
    expected = canvas[..., top : top + kh, left : left + kw]
    fitted = mixed._fit(weight, kh, kw)
    assert fitted.is_contiguous()
    assert torch.equal(fitted, expected)
    # Fitting back is the adjoint: <fit(w), v> == <w, fit(v)>.
    v = torch.randn(2, 3, kh, kw)
    torch.testing.assert_close((fitted * v).sum(), (weight * mixed._fit(v, h, w)).sum())


@pytest.mark.parametrize(
    "kernel,dilation,size,expected",
    [(5, 2, 1, (2, 3)), (5, 2, 2, (2, 3)), (5, 2, 3, (1, 4)), (5, 2, 4, (1, 4)), (5, 2, 5, (0, 5)),
     (3, 2, 2, (1, 2)), (3, 2, 3, (0, 3)), (5, 1, 2, (1, 4)), (5, 1, 3, (0, 5)), (3, 1, 1, (1, 2))],
)  # fmt: skip
def test_live_taps_are_the_taps_that_can_read_the_map(kernel, dilation, size, expected):
    taps = live_taps(kernel, dilation, size)
    assert (taps.start, taps.stop) == expected
    # Brute force: tap i is live when some output pixel reads an in-map pixel through it.
    live = [
        i
        for i in range(kernel)
        if any(0 <= o + (i - kernel // 2) * dilation < size for o in range(size))
    ]
    assert (live[0], live[-1] + 1) == expected


def test_atrous_convs_merge_where_windows_agree_or_padding_is_cheap():
    # Windows agree (2x2: both centre taps; 4x4: both 3x3) whatever the channels.
    assert merge_atrous(3, 2, 2, 2, 5, 64) and merge_atrous(3, 2, 4, 4, 5, 64)
    # 16x16, 5x5 vs 3x3 live taps: 16 extra taps per (path, image, pixel, out, in channel);
    # x 6 for a step: 2 * 2 * 256 * 5 * 2 * 2 * 16 * 6 = 2.0 MFLOP merges, the 8-channel
    # version (31 MFLOP) does not.
    assert merge_atrous(2, 2, 16, 16, 5, 2)
    assert not merge_atrous(2, 2, 16, 16, 5, 8)


@pytest.mark.parametrize(
    "h,merge,mode",
    [(2, True, "train"), (6, True, "train"), (6, False, "train"), (6, False, "eval"),
     (6, True, "bf16")],
)  # fmt: skip
def test_input_edges_keep_five_activations_and_no_weight_copies(h, merge, mode, monkeypatch):
    # What the fused op keeps for its backward is most of a search step's memory: per unit of
    # each separable conv its pointwise input and BN output, the atrous BN output, and the
    # three BN inverse stds (training mode). Weights (also their bf16 copies under autocast),
    # pools and relu(x) are rebuilt in the backward.
    monkeypatch.setattr(mixed, "ATROUS_MERGE_MAX_EXTRA_FLOPS", float("inf") if merge else 0.0)
    n, p, e, c = 2, 2, 3, 4
    module = InputEdges(channels=c, edges=e, paths=p).train(mode != "eval")
    x = torch.randn(n, p * c, h, h, requires_grad=True)
    weights = torch.softmax(torch.randn(e, len(PRIMITIVES)), -1).requires_grad_()
    inputs = {t.untyped_storage().data_ptr() for t in (x, weights, *module.parameters())}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in inputs and storage.nbytes():
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    autocast = torch.autocast("cpu", torch.bfloat16, enabled=mode == "bf16")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = module(x, weights)
    size = 2 if mode == "bf16" else 4
    expected = [n * 2 * p * e * c * h * h * size] * 5  # (N, 2*P*E*C, H, W)
    if mode != "eval":
        expected += [2 * p * e * c * 4] * 3  # float32 inverse stds
    if mode == "bf16":
        expected.append(x.numel() * 2)  # the input in the compute dtype
    assert sorted(kept.values()) == sorted(expected)
    out.float().sum().backward()  # and the backward rebuilds the rest
    assert x.grad is not None and weights.grad is not None
    assert all(param.grad is not None for param in module.parameters())


@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("size", [1, 2, 4, 5])
@pytest.mark.parametrize("mode", ["train", "eval", "frozen"])
def test_joined_readers_compute_what_each_computes_alone(size, merge, mode, monkeypatch):
    # A cell's prev (P paths) and prev_prev (one path) readers run as one call with their own
    # weights and BatchNorm statistics. 8 channels: per-reader pointwise matmuls on 1x1 and 2x2
    # maps (C > H*W), one matmul for both from 4x4; matrix depthwise convs up to 2x2.
    monkeypatch.setattr(mixed, "ATROUS_MERGE_MAX_EXTRA_FLOPS", float("inf") if merge else 0.0)
    torch.manual_seed(0)
    c, e = 8, 3
    readers = [InputEdges(c, e, paths=2), InputEdges(c, e, paths=1)]
    for bn in (m for r in readers for m in r.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.normal_()  # statistics that differ per channel, for eval mode
        bn.running_var.uniform_(0.5, 2.0)
    alone = copy.deepcopy(readers)
    for module in (*readers, *alone):
        module.train(mode != "eval").requires_grad_(mode != "frozen")
    xs = [torch.randn(2, u * c, size, size, requires_grad=True) for u in (2, 1)]
    weights = [torch.softmax(torch.randn(e, len(PRIMITIVES)), -1).requires_grad_() for _ in xs]
    grad_out = torch.randn(2, 3, e, c, size, size)

    def inputs(modules: list[InputEdges]) -> list[torch.Tensor]:
        params = [t for m in modules for t in m.parameters() if t.requires_grad]
        return [*xs, *weights, *params]

    for _ in range(2):  # in training mode, the running statistics move alike
        joined = mixed.mixed_ops(readers, xs, torch.cat(weights))
        separate = torch.cat([r(x, w) for r, x, w in zip(alone, xs, weights, strict=True)], 1)
        torch.testing.assert_close(joined, separate, atol=1e-5, rtol=1e-4)
        ours = torch.autograd.grad(joined, inputs(readers), grad_out)
        theirs = torch.autograd.grad(separate, inputs(alone), grad_out)
        assert len(ours) == (4 if mode == "frozen" else 16)
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=lambda m, i=i: f"{i}: {m}")
    for ours_reader, their_reader in zip(readers, alone, strict=True):
        for (name, a), b in zip(ours_reader.named_buffers(), their_reader.buffers(), strict=True):
            torch.testing.assert_close(a, b, msg=lambda m, n=name: f"{n}: {m}")


def test_joined_readers_must_agree_on_edges_channels_inputs_and_batchnorms():
    a = InputEdges(4, 3, paths=2)
    weights = torch.softmax(torch.randn(6, len(PRIMITIVES)), -1)
    x, x1 = torch.randn(2, 8, 3, 3), torch.randn(2, 4, 3, 3)
    b = InputEdges(4, 3, paths=1)
    with pytest.raises(ValueError, match="2 edges of 4 channels and of 3 edges"):
        mixed.mixed_ops([a, InputEdges(4, 2, paths=1)], [x, x1], weights)
    with pytest.raises(ValueError, match=r"shape \(2, 8, 3, 3\) .* expected \(N, 4, H, W\)"):
        mixed.mixed_ops([a, b], [x, x], weights)
    with pytest.raises(ValueError, match=r"shape \(3, 8\) for 2 reader\(s\) .* \(6, 8\)"):
        mixed.mixed_ops([a, b], [x, x1], weights[:3])
    with pytest.raises(ValueError, match=r"op weights of shape \(6, 8\) .* expected \(3, 8\)"):
        a(x, weights)  # a single reader's weights are checked too
    with pytest.raises(ValueError, match="agree on batch, map size, dtype and device"):
        mixed.mixed_ops([a, b], [x, torch.randn(2, 4, 3, 4)], weights)
    with pytest.raises(ValueError, match="agree on batch, map size, dtype and device"):
        mixed.mixed_ops([a, b], [x, x1.double()], weights)
    counts = [bn.num_batches_tracked.clone() for bn in mixed._batch_norms(a)]
    for change in ("eval", "momentum", "eps"):
        other = InputEdges(4, 3, paths=1)
        if change == "eval":
            other.eval()
        else:
            setattr(other.atrous_bn, change, 0.5)
        with pytest.raises(ValueError, match="agree on their BatchNorms' mode, momentum and eps"):
            mixed.mixed_ops([a, other], [x, x1], weights)
    # A rejected call changes no statistics.
    assert [bn.num_batches_tracked for bn in mixed._batch_norms(a)] == counts


@pytest.mark.parametrize("variant", ["reduced", "cumulative", "bf16", "eval-frozen"])
def test_joined_readers_under_reduced_statistics_cumulative_momentum_bf16_and_eval(
    variant, monkeypatch
):
    # The joined running statistics are written back from the reduced-statistics path as from
    # the library's kernel; momentum=None (a cumulative average) counts each update once;
    # bf16 autocast computes both readers in bf16; eval mode with frozen weights (the
    # architecture step after a weight step in eval) gives the inputs' and op weights' grads.
    if variant == "reduced":
        monkeypatch.setattr(mixed, "REDUCED_BN_MIN_SIZE", 0)
    torch.manual_seed(0)
    c, e, size = 8, 3, 4
    readers = [InputEdges(c, e, paths=2), InputEdges(c, e, paths=1)]
    for bn in (m for r in readers for m in r.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        if variant == "cumulative":
            bn.momentum = None
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    for reader in readers:
        reader.train(variant != "eval-frozen").requires_grad_(variant != "eval-frozen")
    alone = copy.deepcopy(readers)
    xs = [torch.randn(2, u * c, size, size, requires_grad=True) for u in (2, 1)]
    weights = [torch.softmax(torch.randn(e, len(PRIMITIVES)), -1).requires_grad_() for _ in xs]
    grad_out = torch.randn(2, 3, e, c, size, size)
    tolerance = {"atol": 2e-2, "rtol": 2e-2} if variant == "bf16" else {"atol": 1e-5, "rtol": 1e-4}
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=variant == "bf16")
    for _ in range(3):
        with autocast:
            joined = mixed.mixed_ops(readers, xs, torch.cat(weights))
            separate = torch.cat([r(x, w) for r, x, w in zip(alone, xs, weights)], 1)
        assert joined.dtype == separate.dtype
        torch.testing.assert_close(joined, separate, **tolerance)
        params = [[t for m in group for t in m.parameters() if t.requires_grad]
                  for group in (readers, alone)]  # fmt: skip
        ours = torch.autograd.grad(joined.float(), [*xs, *weights, *params[0]], grad_out)
        theirs = torch.autograd.grad(separate.float(), [*xs, *weights, *params[1]], grad_out)
        assert len(ours) == (4 if variant == "eval-frozen" else 16)
        for a, b in zip(ours, theirs, strict=True):
            torch.testing.assert_close(a, b, **tolerance)
    for ours_reader, their_reader in zip(readers, alone, strict=True):
        for (name, a), b in zip(ours_reader.named_buffers(), their_reader.buffers(), strict=True):
            torch.testing.assert_close(a, b, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("momentum", [0.1, None])  # None: a cumulative average
@pytest.mark.parametrize("reduced", [False, True])  # the library's kernel, or reductions
def test_batch_norm_forward_updates_joined_statistics_as_one_module_would(
    momentum, reduced, monkeypatch
):
    # Two readers' BatchNorms, of 2 and 1 units' channels per kernel, joined in the layout
    # (kernel, unit): channels [A, A, B | A, A, B]. One BatchNorm2d over all six channels is
    # the yardstick; each reader's module must end up with its channels' statistics.
    monkeypatch.setattr(mixed, "REDUCED_BN_MIN_SIZE", 0 if reduced else float("inf"))
    torch.manual_seed(0)
    bn_a, bn_b = (torch.nn.BatchNorm2d(2 * u, affine=False, momentum=momentum) for u in (2, 1))
    whole = torch.nn.BatchNorm2d(6, affine=False, momentum=momentum)
    for _ in range(3):
        x = torch.randn(2, 6, 5, 5) * torch.rand(1, 6, 1, 1) * 3 + torch.randn(1, 6, 1, 1)
        out, _, _ = mixed._batch_norm_forward([bn_a, bn_b], x)
        torch.testing.assert_close(out, whole(x))
    for name in ("running_mean", "running_var"):
        stat = getattr(whole, name)
        torch.testing.assert_close(getattr(bn_a, name), stat[[0, 1, 3, 4]])
        torch.testing.assert_close(getattr(bn_b, name), stat[[2, 5]])
    assert bn_a.num_batches_tracked == bn_b.num_batches_tracked == whole.num_batches_tracked == 3
