"""Narrow 3×3 convolutions in C (n3cli.nn.native.conv3x3_narrow, n3cli.nn.narrow.NarrowConv2d) against PyTorch's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n3cli.api import prepare_for_inference
from n3cli.engine import autocast
from n3cli.nn import narrow, native
from n3cli.nn.fuse import fold_batchnorm
from n3cli.nn.narrow import NarrowConv2d, use_narrow_convs
from n3cli.nn.nets import dncnn, n3net

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the kernels are not built")
CL = torch.channels_last


def _native(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    weight = conv.weight.detach().permute(0, 2, 3, 1).contiguous()
    return native.conv3x3_narrow(x, weight, None if conv.bias is None else conv.bias.detach())


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # rows split between two workers (the kernel's threading)
    yield
    torch.set_num_threads(threads)


@needs_native
@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 1), (2, 3), (3, 2), (5, 7), (17, 33), (4, 64)])
@pytest.mark.parametrize("cin,cout", [(64, 8), (64, 1), (64, 3), (16, 8), (128, 5)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_conv2d(size: tuple[int, int], cin: int, cout: int, bias: bool, two_threads) -> None:
    torch.manual_seed(cin * 10 + cout)
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=bias)
    x = torch.randn(2, cin, *size).contiguous(memory_format=CL)
    with torch.no_grad():
        expected = conv(x)
        got = _native(x, conv)
    assert got.shape == expected.shape and got.is_contiguous(memory_format=CL)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_native
def test_refuses_what_it_does_not_serve() -> None:
    conv = nn.Conv2d(64, 8, 3, padding=1)
    x = torch.randn(1, 64, 5, 5)
    with pytest.raises(ValueError, match="channels-last"):
        _native(x, conv)  # NCHW storage
    with pytest.raises(ValueError, match="channels-last"):
        _native(x.double().contiguous(memory_format=CL), conv.double())
    with pytest.raises(ValueError, match="8 to 8"):
        _native(torch.randn(1, 8, 5, 5).contiguous(memory_format=CL), nn.Conv2d(8, 8, 3, padding=1))
    with pytest.raises(ValueError, match="64 to 9"):
        _native(x.contiguous(memory_format=CL), nn.Conv2d(64, 9, 3, padding=1))


def test_only_eligible_convolutions_are_swapped() -> None:
    model = nn.Sequential(nn.Conv2d(64, 8, 3, padding=1), nn.Conv2d(8, 64, 3, padding=1),  # 8 inputs: no
                          nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 1, 3, padding=2, dilation=2),
                          nn.Conv2d(64, 1, 1), nn.Conv2d(64, 1, 3, padding=1))
    use_narrow_convs(model)
    assert [type(m) is NarrowConv2d for m in model] == [True, False, False, False, False, True]


@needs_native
@pytest.mark.parametrize("build", [n3net, dncnn])
def test_prepared_models_give_the_same_output(build, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    kernel = native.conv3x3_narrow
    monkeypatch.setattr(native, "conv3x3_narrow", lambda *a: calls.append(1) or kernel(*a))
    torch.manual_seed(0)
    model = build().eval()
    prepared = prepare_for_inference(model, torch.device("cpu"))
    assert any(isinstance(m, NarrowConv2d) for m in prepared.modules())
    plain = fold_batchnorm(model).to(memory_format=CL)
    x = torch.rand(2, 1, 45, 38).contiguous(memory_format=CL)
    with torch.inference_mode():
        torch.testing.assert_close(prepared(x), plain(x), rtol=1e-5, atol=1e-5)
    assert len(calls) == sum(isinstance(m, NarrowConv2d) for m in prepared.modules())  # each ran in C


@needs_native
def test_unaligned_input_and_size_one_strides() -> None:
    conv = nn.Conv2d(64, 8, 3, padding=1)
    base = torch.randn(1 + 2 * 3 * 64)
    x = base[1:].view(2, 1, 3, 64).permute(0, 3, 1, 2)  # channels-last storage, one float off its alignment
    assert x.is_contiguous(memory_format=CL)
    with torch.no_grad():
        torch.testing.assert_close(_native(x, conv), conv(x.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_tracing_and_wrong_inputs_take_pytorchs_path() -> None:
    conv = use_narrow_convs(nn.Sequential(nn.Conv2d(64, 1, 3, padding=1)))[0].requires_grad_(False)
    x, x2 = (torch.randn(1, 64, 5, 5).contiguous(memory_format=CL) for _ in range(2))
    with torch.no_grad():
        traced = torch.jit.trace(conv, x)
        torch.testing.assert_close(traced(x2), conv(x2))  # not the first input's output frozen into the trace
        with pytest.raises(RuntimeError):  # PyTorch's own error for the wrong channel count
            conv(torch.randn(1, 32, 5, 5).contiguous(memory_format=CL))


def test_autocast_without_the_bf16_kernel_and_nchw_take_pytorchs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    for name in ("conv3x3_narrow", "conv3x3_narrow_bf16"):
        monkeypatch.setattr(native, name, lambda *a: calls.append(a) or pytest.fail("native path taken"))
    monkeypatch.setattr(native, "has_bf16_conv", lambda: False)  # a CPU without AVX512-BF16
    conv = use_narrow_convs(nn.Sequential(nn.Conv2d(64, 8, 3, padding=1)))[0]
    assert isinstance(conv, NarrowConv2d)
    x = torch.randn(1, 64, 6, 6).contiguous(memory_format=CL)
    with autocast("bf16", torch.device("cpu")):
        y = conv(x.requires_grad_())
        assert y.dtype == torch.bfloat16  # the caller's precision is kept, in training too
    y.float().sum().backward()
    assert x.grad is not None and conv.weight.grad is not None
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        assert conv(x.detach()).dtype == torch.bfloat16
    with torch.inference_mode():
        assert conv(x.detach().contiguous()).shape == (1, 8, 6, 6)  # NCHW storage
    assert not calls


needs_bf16 = pytest.mark.skipif(not native.has_bf16_conv(), reason="no AVX512-BF16 build of the bf16 kernel here")


@needs_bf16
@pytest.mark.parametrize("size", [(1, 1), (1, 2), (2, 3), (5, 7), (17, 33)])
@pytest.mark.parametrize("cin,cout", [(64, 8), (64, 1), (64, 3), (32, 8), (128, 5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_inference_matches_autocast(size: tuple[int, int], cin: int, cout: int, bias: bool, dtype: torch.dtype,
                                         monkeypatch: pytest.MonkeyPatch, two_threads) -> None:
    """Under bf16 autocast the C kernel computes what oneDNN's bf16 convolution does: bf16 input, weight and bias,
    float32 sums, a bf16 result (each within one rounding of bf16 of the exact sum)."""
    calls = []
    kernel = native.conv3x3_narrow_bf16
    monkeypatch.setattr(native, "conv3x3_narrow_bf16", lambda *a: calls.append(1) or kernel(*a))
    torch.manual_seed(cin + cout + size[1])
    ref = nn.Conv2d(cin, cout, 3, padding=1, bias=bias).to(memory_format=CL)
    fast = use_narrow_convs(nn.Sequential(copy.deepcopy(ref)))[0]
    x = torch.randn(2, cin, *size).to(dtype).contiguous(memory_format=CL)
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        got, onednn = fast(x), ref(x)
    assert calls and got.dtype == onednn.dtype == torch.bfloat16 and got.is_contiguous(memory_format=CL)
    rounded = [t.to(torch.bfloat16).float() for t in (x, ref.weight.detach())]
    exact = F.conv2d(*rounded, None if ref.bias is None else ref.bias.detach().to(torch.bfloat16).float(), padding=1)
    torch.testing.assert_close(got.float(), exact, rtol=2**-8, atol=1e-4)
    torch.testing.assert_close(got.float(), onednn.float(), rtol=2**-7, atol=1e-3)


@needs_bf16
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 33)])
@pytest.mark.parametrize("cin,cout", [(64, 8), (64, 1), (32, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bf16_training_matches_autocast(size: tuple[int, int], cin: int, cout: int, dtype: torch.dtype,
                                        two_threads) -> None:
    """Training under bf16 autocast: the output as oneDNN's (within one bf16 rounding), the gradients as autocast's
    nn.Conv2d within bf16 precision (the weights' gradient is summed in float32 here, rounded to bf16 there), the
    input's in the input's dtype."""
    torch.manual_seed(cin + cout + size[0])
    ref = nn.Conv2d(cin, cout, 3, padding=1).to(memory_format=CL)
    fast = use_narrow_convs(nn.Sequential(copy.deepcopy(ref)))[0]
    x = torch.randn(3, cin, *size).to(dtype).contiguous(memory_format=CL)
    g = torch.randn(3, cout, *size)
    outs, grads = [], []
    for conv in (ref, fast):
        xi = x.clone().requires_grad_()
        with autocast("bf16", torch.device("cpu")):
            y = conv(xi)
        y.float().backward(g)
        outs.append(y)
        grads.append([xi.grad, conv.weight.grad, conv.bias.grad])
    assert outs[1].dtype == torch.bfloat16
    torch.testing.assert_close(outs[1].float(), outs[0].float(), rtol=2**-7, atol=1e-3)
    for got, expected in zip(grads[1], grads[0], strict=True):
        assert got.dtype == expected.dtype and got.shape == expected.shape
        scale = float(expected.abs().max()) or 1.0
        torch.testing.assert_close(got.float() / scale, expected.float() / scale, rtol=0, atol=2**-7)


def test_bf16_kernel_refuses_what_it_does_not_serve() -> None:
    if not native.available():
        pytest.skip("no C compiler")
    x = torch.randn(1, 64, 5, 5).to(torch.bfloat16).contiguous(memory_format=CL)
    weight = torch.randn(8, 3, 3, 64).to(torch.bfloat16)
    with pytest.raises(ValueError):
        native.conv3x3_narrow_bf16(x.contiguous(), weight, torch.zeros(8))  # NCHW storage
    with pytest.raises(ValueError):
        native.conv3x3_narrow_bf16(x, weight.float(), torch.zeros(8))  # float32 weights
    with pytest.raises(ValueError):  # 16 input channels: not a multiple of 32
        native.conv3x3_narrow_bf16(x[:, :16].contiguous(memory_format=CL), weight[..., :16].contiguous(),
                                   torch.zeros(8))


def test_training_without_native_takes_pytorchs_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(narrow, "NATIVE_TRAINING", False)
    monkeypatch.setattr(native, "conv3x3_narrow", lambda *a: pytest.fail("native path taken"))
    conv = use_narrow_convs(nn.Sequential(nn.Conv2d(64, 8, 3, padding=1)))[0]
    x = torch.randn(1, 64, 6, 6).contiguous(memory_format=CL).requires_grad_()
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


@needs_native
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (5, 7), (17, 33)])
@pytest.mark.parametrize("cin,cout", [(64, 8), (64, 1), (64, 3), (16, 8), (128, 5), (32, 2)])
@pytest.mark.parametrize("bias", [True, False])
def test_training_gradients_match_conv2d(size: tuple[int, int], cin: int, cout: int, bias: bool, two_threads) -> None:
    """Forward and every gradient of the C training path (the weights' in C, the input's by oneDNN) against
    nn.Conv2d's, for a batch of 3 (the threads' rows cross image boundaries)."""
    torch.manual_seed(cin + cout + size[0])
    ref = nn.Conv2d(cin, cout, 3, padding=1, bias=bias).to(memory_format=CL)
    fast = use_narrow_convs(nn.Sequential(copy.deepcopy(ref)))[0]
    assert isinstance(fast, NarrowConv2d)
    x = torch.randn(3, cin, *size).contiguous(memory_format=CL)
    g = torch.randn(3, cout, *size)
    outs, grads = [], []
    for conv in (ref, fast):
        xi = x.clone().requires_grad_()
        y = conv(xi)
        y.backward(g)
        outs.append(y)
        grads.append([xi.grad, conv.weight.grad] + ([conv.bias.grad] if bias else []))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for got, expected in zip(grads[1], grads[0], strict=True):
        assert got.shape == expected.shape
        scale = float(expected.abs().max()) or 1.0
        torch.testing.assert_close(got / scale, expected / scale, rtol=0, atol=2e-6)


@needs_native
def test_training_path_runs_in_c_and_follows_requires_grad(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    wgrad = native.conv3x3_narrow_wgrad
    monkeypatch.setattr(native, "conv3x3_narrow_wgrad", lambda *a: calls.append(1) or wgrad(*a))
    conv = use_narrow_convs(nn.Sequential(nn.Conv2d(64, 1, 3, padding=1)))[0]  # NCHW weight: gradient in its layout
    x = torch.randn(2, 64, 9, 7).contiguous(memory_format=CL)
    conv(x.requires_grad_()).sum().backward()
    assert calls and conv.weight.grad.is_contiguous()
    y = conv(x)
    y += 1  # in place on the output (a residual sum): the output is no view of the kernel's buffer
    y.sum().backward()
    calls.clear()
    conv.requires_grad_(False)
    x.grad = None
    conv(x).sum().backward()  # only the input's gradient: no weight gradient computed
    assert not calls and x.grad is not None
    with pytest.raises(RuntimeError):  # once differentiable: no double backward through the C kernel
        conv.requires_grad_(True)
        gx, = torch.autograd.grad(conv(x).sum(), x, create_graph=True)
        gx.sum().backward()


@needs_native
def test_training_step_matches_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole DnCNN's loss gradient with its last convolution (64 → 1) in C against nn.Conv2d's. (A freshly drawn
    N3Net's gradients move by far more than rounding under a 1e-7 change of its input, through the neighbour
    selection: no whole-model comparison there; its layers are the ones tested above.)"""
    torch.manual_seed(0)
    model = dncnn(in_channels=1, depth=6).to(memory_format=CL).train()
    fast = use_narrow_convs(copy.deepcopy(model))
    assert sum(isinstance(m, NarrowConv2d) for m in fast.modules()) == 1
    assert sum(isinstance(m, NarrowConv2d) for m in use_narrow_convs(n3net()).modules()) == 7
    x = torch.rand(2, 1, 30, 34).contiguous(memory_format=CL)
    grads = []
    for net in (model, fast):
        net.zero_grad()
        net(x).square().mean().backward()
        grads.append({name: p.grad for name, p in net.named_parameters()})
    for name, expected in grads[0].items():
        scale = float(expected.abs().max()) or 1.0
        torch.testing.assert_close(grads[1][name] / scale, expected / scale, rtol=0, atol=1e-5, msg=name)


@needs_bf16
def test_prepared_dncnn_under_bf16_autocast_runs_the_bf16_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    kernel = native.conv3x3_narrow_bf16
    monkeypatch.setattr(native, "conv3x3_narrow_bf16", lambda *a: calls.append(1) or kernel(*a))
    torch.manual_seed(0)
    model = dncnn(depth=6).eval()
    prepared = prepare_for_inference(model, torch.device("cpu"))
    plain = fold_batchnorm(model).to(memory_format=CL)
    x = torch.rand(2, 1, 45, 38).contiguous(memory_format=CL)
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        got, expected = prepared(x), plain(x)
    assert len(calls) == 1  # its last convolution, 64 → 1
    torch.testing.assert_close(got.float(), expected.float(), rtol=2**-7, atol=2e-3)
