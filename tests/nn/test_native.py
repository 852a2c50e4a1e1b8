"""The fused C aggregation (n3cli.nn.native) against the PyTorch block path, and its fallback.

Random inputs of many sizes (1×1, grids smaller than the window, clamped windows at every edge, long thin
images), batch 2, with and without the distance norm, both updates, k = 1 / 3 / 7, the published layout
(stride 5, 8 channels) and n3net-color's 11 channels (vectorised code) and others (generic code). The
selection is well conditioned (moderate logit gaps), where float32 rounding moves the result by ~1e-6 of its
scale on either path.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from n3cli.nn import native
from n3cli.nn.n3 import N3Aggregation2d

from .test_n3_blocks import fix_distance_norm

needs_native = pytest.mark.skipif(not native.available(), reason="no C compiler: the fused aggregation is not built")


def _inputs(b: int, c: int, e: int, h: int, w: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h, w, generator=g), 0.05 * torch.randn(b, e, h, w, generator=g),
            0.3 * torch.randn(b, 1, h, w, generator=g)]


def _both(agg: N3Aggregation2d, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.inference_mode():
        agg.native = False
        expected = agg(*inputs)
        agg.native = True
        got = agg(*inputs)
    return got, expected


CASES = [  # (h, w), channels, embedding channels, k, options
    ((1, 1), 8, 8, 7, {}),
    ((3, 3), 8, 8, 7, {}),
    ((9, 14), 8, 8, 7, {}),
    ((12, 8), 8, 8, 3, {}),
    ((37, 501), 8, 8, 7, {}),
    ((80, 80), 8, 8, 7, {}),
    ((96, 131), 8, 8, 7, {"update": "logits"}),
    ((61, 45), 8, 8, 1, {}),
    ((50, 77), 8, 8, 7, {"distance_norm": False}),
    ((130, 97), 3, 4, 7, {}),
    ((71, 58), 11, 8, 7, {}),  # n3net-color's 11 channels (their own vectorised code)
    ((9, 83), 11, 8, 3, {"update": "logits"}),
    ((23, 31), 3, 4, 3, {"patch": 4, "stride": 2, "window": 5}),
    ((23, 31), 2, 3, 3, {"patch": 6, "stride": 2, "window": 4}),
    ((37, 45), 8, 10, 3, {"patch": 8, "stride": 4, "window": 5}),  # stride x embedding = 40, as the published blocks
    ((47, 53), 8, 5, 3, {"patch": 16, "stride": 8, "window": 3}),
]


@needs_native
@pytest.mark.parametrize(("size", "c", "e", "k", "options"), CASES)
def test_native_matches_the_pytorch_block_path(size: tuple[int, int], c: int, e: int, k: int, options: dict) -> None:
    torch.manual_seed(0)
    agg = N3Aggregation2d(k=k, **options).eval()
    fix_distance_norm(agg)
    got, expected = _both(agg, _inputs(2, c, e, *size, seed=size[0] * 1000 + size[1]))
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@needs_native
@pytest.mark.parametrize("update", ["alpha", "logits"])
def test_native_at_an_infinite_temperature_matches_pytorch(update: str) -> None:
    """Input far outside the trained range (an image on 0-255 given as 0-1) drove the temperature CNN to t = inf:
    the query's own candidate (-inf) became -inf / inf = NaN and the output NaN. Excluded stays excluded: uniform
    weights, as the PyTorch path gives."""
    torch.manual_seed(0)
    agg = N3Aggregation2d(k=3, update=update).eval()
    fix_distance_norm(agg)
    x, e, log_t = _inputs(1, 8, 8, 23, 31, seed=5)
    log_t[..., :12, :] = float("inf")  # t = exp(inf) over the upper half; 0 further down
    got, expected = _both(agg, [x, e, log_t])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


@needs_native
def test_native_runs_for_inference_only() -> None:
    """With autograd (training, or inputs that need gradients) and for float64 the PyTorch path runs."""
    agg = N3Aggregation2d(k=3).eval()
    x, e, log_t = _inputs(1, 8, 8, 30, 30, seed=1)
    assert agg._can_run_native(x, e, log_t) is False  # grad mode, parameters that need gradients
    with torch.no_grad():
        assert agg._can_run_native(x, e, log_t)
        assert not agg._can_run_native(x.double(), e.double(), log_t.double())
        agg.train()
        assert not agg._can_run_native(x, e, log_t)  # the distance norm takes batch statistics in training


@needs_native
def test_native_result_does_not_depend_on_threads_or_bands() -> None:
    """Bands recompute the query rows at their edges with the same arithmetic: bit-identical results."""
    agg = N3Aggregation2d(k=7).eval()
    inputs = _inputs(1, 8, 8, 203, 77, seed=2)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            with torch.inference_mode():
                outs.append(agg(*inputs))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


@needs_native
def test_native_reports_progress() -> None:
    agg = N3Aggregation2d(k=2).eval()
    calls: list[tuple[int, int]] = []
    with torch.inference_mode():
        agg(*_inputs(2, 8, 8, 60, 45, seed=3), progress=lambda i, n: calls.append((i, n)))
    assert calls and calls[-1][0] == calls[-1][1] and [i for i, _ in calls] == list(range(1, len(calls) + 1))


@needs_native
def test_shipped_model_same_output_with_native_aggregation() -> None:
    from n3cli import api

    net = api.load_model("n3net-nlf", "denoise", torch.device("cpu"), precision="fp32").model
    aggs = [m for m in net.modules() if isinstance(m, N3Aggregation2d)]
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(1, 1, 70, 90, generator=g) + 0.1 * torch.randn(1, 1, 70, 90, generator=g)).clamp(0, 1)
    level = torch.tensor([[0.0, 0.01]])
    outs = []
    with torch.inference_mode():
        for fused in (False, True):
            for m in aggs:
                m.native = fused
            outs.append(net(y, level))
    assert (outs[1] - outs[0]).abs().max().item() < 2e-5  # on [0, 1]; 8-bit steps are 4e-3


def test_without_a_compiler_the_pytorch_path_runs(tmp_path) -> None:
    """No compiler (and N3_NATIVE=0): library() is None, and the aggregation still works."""
    code = ("import torch; from n3cli.nn import native; from n3cli.nn.n3 import N3Aggregation2d;"
            "native._compilers = lambda: [];"
            "assert native.library() is None;"
            "a = N3Aggregation2d(k=2).eval();"
            "out = a(torch.rand(1, 2, 20, 20), torch.rand(1, 3, 20, 20), torch.zeros(1, 1, 20, 20));"
            "assert out.shape == (1, 6, 20, 20) and torch.isfinite(out).all(); print('ok')")
    env = dict(os.environ, N3_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    assert not list(tmp_path.rglob("*no-openmp"))  # no compiler at all: OpenMP is not ruled out for later starts
    env["N3_NATIVE"] = "0"
    done = subprocess.run([sys.executable, "-c", "from n3cli.nn import native; print(native.library())"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "None", done.stderr


def test_outside_the_kernels_limits_the_pytorch_path_runs() -> None:
    agg = N3Aggregation2d(k=65, window=5).eval()
    x, e, log_t = _inputs(1, 2, 3, 20, 20, seed=5)
    with torch.inference_mode():
        assert not agg._can_run_native(x, e, log_t)
        assert agg(x, e, log_t).shape == (1, 66 * 2, 20, 20)


def test_a_broken_cached_library_is_rebuilt(tmp_path) -> None:
    """A truncated file in the cache (an interrupted copy, a foreign build) is replaced, not a crash."""
    env = dict(os.environ, N3_CACHE_DIR=str(tmp_path))
    code = "from n3cli.nn import native; print(native.library() is not None)"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    if done.stdout.strip() != "True":
        pytest.skip("no C compiler")
    (built,) = (tmp_path / "native").glob("aggregate-*.so")
    built.write_bytes(b"not a library")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
    assert built.stat().st_size > 1000


def test_a_compiler_without_openmp_gives_the_plain_build(tmp_path) -> None:
    """A compiler that refuses -fopenmp: the library is built without OpenMP (asked once: a marker remembers it),
    its kernels run on the Python pool, and a training step through them works."""
    real = native._compilers()
    if not real or native.library() is None:
        pytest.skip("no C compiler")
    wrapper = tmp_path / "cc-without-openmp"
    wrapper.write_text('#!/bin/sh\nfor a in "$@"; do [ "$a" = -fopenmp ] && exit 1; done\nexec ' + " ".join(real[0])
                       + ' "$@"\n')
    wrapper.chmod(0o755)
    code = ("import torch; from n3cli.nn import native, n3;"
            f"native._compilers = lambda: [[{str(wrapper)!r}]];"
            "lib = native.library(); assert lib is not None and not lib.n3_openmp() and not native._torch_team();"
            "torch.set_num_threads(2); torch.manual_seed(0);"
            "block = n3.N3Block2d(in_channels=3, k=2).train();"
            "x = torch.rand(2, 3, 40, 35, requires_grad=True); block(x).square().sum().backward();"
            "assert torch.isfinite(x.grad).all(); print('ok')")
    env = dict(os.environ, N3_CACHE_DIR=str(tmp_path))
    for _ in range(2):  # the second start finds the marker and the plain build in the cache
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
    files = sorted(f.name for f in (tmp_path / "native").glob("aggregate-*"))  # the plain build and the marker
    assert len(files) == 2 and files[1].endswith(".so") and files[0] == files[1].removesuffix(".so") + "-no-openmp"


def test_openmp_runtimes_are_recognised_by_file_name() -> None:
    for name in ("libgomp.so.1", "libgomp-a34b3233.so.1", "libomp.so", "libomp.so.5", "libiomp5.so"):
        assert native._OPENMP_RUNTIME.match(name), name
    for name in ("libomptarget.so", "libgompx.so", "libtorch_cpu.so", "libm.so.6"):
        assert not native._OPENMP_RUNTIME.match(name), name


def _selection(alpha: torch.Tensor, t: torch.Tensor, k: int, update: str, use_native: bool,
               dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Weights and the gradients of (weights · probe) w.r.t. alpha and t, through the C or the PyTorch selection."""
    from n3cli.nn import knn

    previous = knn.NATIVE
    knn.NATIVE = use_native
    try:
        a = alpha.to(dtype).clone().requires_grad_()
        tt = t.to(dtype).clone().requires_grad_()
        w = knn.continuous_knn(a, tt, k, update=update)
        probe = torch.linspace(-1.0, 1.0, w.numel(), dtype=torch.float64).view(w.shape)
        (w * probe.to(dtype)).sum().backward()
    finally:
        knn.NATIVE = previous
    assert a.grad is not None and tt.grad is not None
    return w.detach().double(), a.grad.double(), tt.grad.double()


@needs_native
@pytest.mark.parametrize("update", ["alpha", "logits"])
@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
def test_native_selection_is_as_accurate_as_pytorch(update: str, k: int, scale: float) -> None:
    """The C selection's weights and gradients (alpha, temperature), float32, against float64: within 1e-4 of each
    tensor's largest value (float32 rounding over sums of 30 candidates) or, where the PyTorch float32 selection is
    itself further off, no more than twice as far as it. Rows with excluded candidates, a few, one and no candidates,
    and a dominant nearest candidate (the others' weights underflow: the log-sum-exp step, logit gaps up to 1e6)."""
    g = torch.Generator().manual_seed(int(scale) * 10 + k)
    alpha = -scale * torch.rand(4, 25, 30, generator=g, dtype=torch.float64)
    alpha[..., 7] = float("-inf")
    alpha[0, 0, 4:] = float("-inf")  # four candidates for seven neighbours
    alpha[1, 1] = float("-inf")
    alpha[1, 1, 2] = -0.5  # one candidate
    alpha[2, 2] = float("-inf")  # none
    alpha[3, 3, 5] = scale * 200.0  # dominant: a logit gap far beyond float32's exp range
    t = 0.02 + 0.4 * torch.rand(4, 25, 1, generator=g, dtype=torch.float64)
    exact = _selection(alpha, t, k, update, False, torch.float64)
    ours = _selection(alpha, t, k, update, True, torch.float32)
    theirs = _selection(alpha, t, k, update, False, torch.float32)
    for name, o, p, e in zip(("weights", "alpha grad", "t grad"), ours, theirs, exact, strict=True):
        assert torch.isfinite(o).all(), name
        scale_e = e.abs().max().clamp_min(1e-30)
        err_ours, err_theirs = ((o - e).abs().max() / scale_e).item(), ((p - e).abs().max() / scale_e).item()
        assert err_ours <= max(2 * err_theirs, 1e-4), (name, err_ours, err_theirs)


@needs_native
@pytest.mark.parametrize("m", [1, 7, 15, 16, 17, 33, 225])
def test_native_selection_picks_the_first_of_tied_nearest(m: int) -> None:
    """The first step's top candidate is the first of the largest logits (ties common: integer logits), at row
    lengths around the kernel's vector width: the maximum anywhere (also only past the first 16 entries, or last),
    NaN never taken; a row without candidates has none (-1)."""
    g = torch.Generator().manual_seed(m)
    alpha = -torch.randint(0, 3, (40, m), generator=g).float() - 1.0
    alpha[torch.rand(40, m, generator=g) < 0.2] = float("-inf")
    alpha[0] = float("-inf")
    for row in range(1, min(m, 20)):  # a single largest logit at position (row * 7) % m, past 16 where m allows
        alpha[row, (row * 7 + 16) % m] = 0.5
    alpha[20, -1] = 0.5  # the last entry
    alpha[21] = float("-inf")
    alpha[21, -1] = -2.0  # the only candidate is the last one
    alpha[22, : m // 2] = float("nan")  # NaN before the largest finite logit
    alpha[22, -1] = 0.25
    t = torch.full((40,), 0.5)
    _, top, _ = native.knn_forward(alpha.contiguous(), t, 3, True)
    finite = torch.where(torch.isnan(alpha), torch.full_like(alpha, float("-inf")), alpha)
    has_candidate = torch.isfinite(finite).any(dim=1)
    assert (top[~has_candidate, 0] == -1).all()
    first = torch.argmax(finite, dim=1)  # the first of equal maxima
    assert torch.equal(top[has_candidate, 0].long(), first[has_candidate])


@needs_native
def test_native_selection_trains_like_the_pytorch_one() -> None:
    """A training forward and backward of the aggregation (80 × 80, batch 2): the same output and gradients with the C
    selection as with the PyTorch one."""
    from n3cli.nn import knn

    torch.manual_seed(0)
    agg = N3Aggregation2d().train()
    fix_distance_norm(agg)
    inputs = _inputs(2, 8, 8, 80, 80, seed=5)
    probe = torch.randn(2, 64, 80, 80, generator=torch.Generator().manual_seed(6))
    results = []
    for use_native in (False, True):
        knn.NATIVE = use_native
        try:
            leaves = [v.clone().requires_grad_() for v in inputs]
            out = agg(*leaves)
            (out * probe).sum().backward()
        finally:
            knn.NATIVE = True
        results.append([out.detach()] + [v.grad for v in leaves])
    for got, expected in zip(results[1], results[0], strict=True):
        assert got is not None and expected is not None
        torch.testing.assert_close(got, expected, rtol=0, atol=2e-5 * expected.abs().max().item())


@needs_native
def test_native_selection_under_a_float64_default_dtype() -> None:
    """float32 logits take the C selection whatever torch's default dtype is; its buffers stay float32."""
    from n3cli.nn import knn

    alpha = -torch.rand(5, 12, generator=torch.Generator().manual_seed(2))
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = knn.continuous_knn(alpha, 0.1, 3)
    finally:
        torch.set_default_dtype(previous)
    knn.NATIVE = False
    try:
        expected = knn.continuous_knn(alpha, 0.1, 3)
    finally:
        knn.NATIVE = True
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@needs_native
@pytest.mark.parametrize("shape", [(15, 15, 7, 15, 15, 2), (1, 1, 1, 1, 1, 2), (4, 3, 2, 5, 6, 3), (3, 5, 7, 3, 5, 1)])
def test_native_spread_matrix_is_the_pytorch_one_bit_for_bit(shape: tuple[int, int, int, int, int, int],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The training tile's spread matrix (n3._SpreadWhole) and its backward in C: the same sums in the same order;
    and its adjoint (n3._PatchInner)."""
    from n3cli.nn import n3

    tr, tc, k, wh, ww, nb = shape
    g = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(3, tr * tc * k * wh * ww, generator=g).requires_grad_()
    results = []
    for fused in (False, True):
        monkeypatch.setattr(n3, "NATIVE_TRAINING", fused)
        out = n3._SpreadWhole.apply(w, shape)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (grad,) = torch.autograd.grad(out, w, probe)
        results.append((out, grad))
    (out0, grad0), (out1, grad1) = results
    assert torch.equal(out1, out0) and torch.equal(grad1, grad0)
    assert out0.abs().sum() > 0 and grad0.abs().sum() > 0
    # its adjoint, the patches' inner products from their blocks' (k = 1 there): the same floats each way too
    adjoint = []
    for fused in (False, True):
        monkeypatch.setattr(n3, "NATIVE_TRAINING", fused)
        gram = out0.detach().clone().requires_grad_()
        inner = n3._PatchInner.apply(gram, shape)
        adjoint.append((inner, *torch.autograd.grad(inner, gram, w.detach())))
    assert torch.equal(adjoint[1][0], adjoint[0][0]) and torch.equal(adjoint[1][1], adjoint[0][1])


@needs_native
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_training_step_is_the_same_with_the_native_kernels(layout: torch.memory_format,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole N3 block's output and gradients in training, through the C kernels (spread matrix, patch inner
    products, distance norm; output assembly for a channels-last input) and through PyTorch: the same within float32
    rounding (the C distance norm computes in double what PyTorch computes partly in float32)."""
    from n3cli.nn import n3

    torch.manual_seed(0)
    block = n3.N3Block2d(in_channels=3, k=2).train()
    x = torch.rand(2, 3, 40, 35).contiguous(memory_format=layout)
    results = []
    for fused in (False, True):
        monkeypatch.setattr(n3, "NATIVE_TRAINING", fused)
        xi = x.clone().requires_grad_()
        out = block(xi)
        out.square().sum().backward()
        results.append([out.detach(), xi.grad, *[p.grad.clone() for p in block.parameters() if p.grad is not None]])
        block.zero_grad()
    assert len(results[0]) == len(results[1]) > 3
    # some true gradients are 0 (the distance norm's bias: the selection does not change when all logits shift
    # alike), so rounding there is measured against the largest parameter gradient
    scale = max(b.abs().max().item() for b in results[0][2:])
    for i, (a, b) in enumerate(zip(results[1], results[0], strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * (b.abs().max().item() if i < 2 else scale))


@needs_native
def test_training_kernels_give_the_same_bits_on_torchs_threads_and_on_the_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """The row-split kernels (selection, spread matrix, output assembly, narrow convolutions) split their rows alike
    whether torch's OpenMP threads run the ranges (where the library shares torch's runtime) or the Python pool."""
    from n3cli.nn import n3
    from n3cli.nn.narrow import use_narrow_convs

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        block = use_narrow_convs(n3.N3Block2d(in_channels=3, k=2)).train().to(memory_format=torch.channels_last)
        x = torch.rand(2, 3, 40, 35).contiguous(memory_format=torch.channels_last)
        results = []
        for team in (native._torch_team(), False):
            monkeypatch.setattr(native, "_torch_team", lambda team=team: team)
            xi = x.clone().requires_grad_()
            out = block(xi)
            out.square().sum().backward()
            results.append([out.detach(), xi.grad, *[p.grad.clone() for p in block.parameters()]])
            block.zero_grad()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


@needs_native
@pytest.mark.parametrize("dims", [(2, 16, 16, 7, 8, 5, 0, 0, 80, 80), (2, 5, 6, 3, 2, 5, 2, 1, 21, 27),
                                  (1, 3, 3, 2, 1, 2, 1, 0, 4, 6)])
@pytest.mark.parametrize("grad_layout", [torch.channels_last, torch.contiguous_format])
def test_native_blocks_to_pixels_matches_pytorch(dims: tuple[int, ...], grad_layout: torch.memory_format,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The training path's output assembly (n3._BlocksToPixels, channels-last) in C: the same values up to a fused
    multiply-add's rounding, forward and backward, cropped at offsets (the padding gets no gradient)."""
    from n3cli.nn import n3

    b, bh, bw, k, c, s, top, left, h, w = dims
    g = torch.Generator().manual_seed(h * w)
    acc0 = torch.randn(b, bh, bw, k, c, s, s, generator=g)
    x0 = torch.randn(b, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    inv = torch.rand(bh, bw, generator=g) + 0.1
    probe = torch.randn(b, (k + 1) * c, h, w, generator=g).contiguous(memory_format=grad_layout)
    results = []
    for fused in (False, True):
        monkeypatch.setattr(n3, "NATIVE_TRAINING", fused)
        acc, x = acc0.clone().requires_grad_(), x0.clone().requires_grad_()
        out = n3._BlocksToPixels.apply(acc, x, inv, (top, left), True)
        results.append((out, *torch.autograd.grad(out, [acc, x], probe)))
    assert results[1][0].stride() == results[0][0].stride()  # the output channels-last (the gradient of x: any)
    for fused, plain in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(fused, plain, rtol=0, atol=1e-6 * plain.abs().max().item())
    padding = results[0][1] == 0  # the padding's pixels get no gradient: exactly zero
    assert bool(padding.any()) == ((top, left, h, w) != (0, 0, bh * s, bw * s))
    assert not results[1][1][padding].any()


@needs_native
def test_native_distance_norm_matches_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distance norm with batch statistics in C (float32 in and out, double inside) against the PyTorch norm run
    in float64: output, the gradients of the distances, the weight and the bias, and the running statistics."""
    from n3cli.nn import n3

    g = torch.Generator().manual_seed(0)
    alpha = -torch.rand(4, 30, 40, generator=g, dtype=torch.float64) * 50
    valid = torch.rand(1, 30, 40, generator=g) > 0.1
    valid[0, :, 0] = False
    probe = torch.randn(4, 30, 40, generator=g, dtype=torch.float64)
    results = []
    for dtype in (torch.float64, torch.float32):
        bn = n3.DistanceNorm().train().to(dtype)
        with torch.no_grad():
            bn.weight.fill_(1.3)
            bn.bias.fill_(-0.2)
        assert bn._can_run_native(alpha.to(dtype), valid) == (dtype == torch.float32)
        a = alpha.to(dtype).requires_grad_()
        out = bn(a, valid)
        grads = torch.autograd.grad(out, [a, bn.weight, bn.bias], probe.to(dtype))
        results.append([t.double() for t in (out, *grads, bn.running_mean, bn.running_var)])
    for c, exact in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(c, exact, rtol=1e-6, atol=1e-6 * exact.abs().max().item())
    assert torch.equal(results[1][0][~valid.expand(4, -1, -1)], alpha[~valid.expand(4, -1, -1)].float().double())
    empty = n3.DistanceNorm().train()(torch.zeros(0, 5, 6), torch.ones(1, 5, 6, dtype=torch.bool))  # nothing to do
    assert empty.shape == (0, 5, 6)


@needs_native
def test_native_training_kernels_refuse_shapes_they_would_overrun() -> None:
    shape = (3, 3, 2, 3, 3, 2)
    with pytest.raises(ValueError, match="native N3 kernel"):
        native.spread_whole(torch.zeros(2, 3 * 3 * 2 * 3 * 3 - 1), shape)
    with pytest.raises(ValueError, match="native N3 kernel"):
        native.spread_whole_backward(torch.zeros(2, 10), shape)
    acc = torch.zeros(1, 2, 2, 2, 1, 5, 5)
    with pytest.raises(ValueError, match="native N3 kernel"):
        native.blocks_to_pixels(acc, torch.zeros(1, 1, 10, 10), torch.ones(3, 2), (0, 0))
    with pytest.raises(ValueError, match="native N3 kernel"):
        native.distance_norm(torch.zeros(4, 6), torch.ones(3, 6, dtype=torch.bool), 1e-5, 1.0, 0.0)
