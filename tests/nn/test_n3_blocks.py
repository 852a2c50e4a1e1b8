"""The block implementation of the image aggregation against the original one (``reference=True``).

Outputs, gradients (block input, embedding, log-temperature, distance-norm parameters) and the distance
norm's running statistics, in training and eval mode, for sizes where the window is clamped at the grid's
edges, where the grid is smaller than the window, and the degenerate 1×1 grid.
"""

from __future__ import annotations

import pytest
import torch

from n3cli.nn import n3
from n3cli.nn.n3 import N3Aggregation2d, N3Block2d


def _run(agg: N3Aggregation2d, inputs: list[torch.Tensor], reference: bool,
         state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
    agg.load_state_dict(state)
    agg.zero_grad(set_to_none=True)
    agg.reference = reference
    leaves = [v.clone().requires_grad_() for v in inputs]
    out = agg(*leaves)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    (out * g).sum().backward()
    grads = [v.grad if v.grad is not None else torch.zeros_like(v) for v in leaves]
    grads += [q.grad if q.grad is not None else torch.zeros_like(q) for q in agg.parameters()]
    return out.detach(), grads, {k: v.clone() for k, v in agg.state_dict().items()}


def _compare(agg: N3Aggregation2d, inputs: list[torch.Tensor], rtol: float = 1e-5, grad_tol: float = 2e-4) -> float:
    """Asserts new == reference; returns the largest error of the outputs relative to their scale.

    Outputs and gradients w.r.t. the block input: rtol 1e-5, atol 1e-5 of the tensor's largest value
    (observed: <= 7.5e-6). Gradients w.r.t. embedding, log-temperature and norm weight: 2e-4 of the
    gradient's largest value (observed: <= 1.3e-4, float32 training at 80×80, where the distance norm and
    the selection's small temperatures amplify rounding; there each path is 1e-5 to 5e-5 off a float64
    evaluation. In float64 the two paths agree to 3.4e-7, and the block path matches a direct evaluation
    of the definition (tests/nn/test_n3.py's loop) to 3e-12 where the reference is off by 2e-6).
    """
    state = {k: v.clone() for k, v in agg.state_dict().items()}
    out_r, grads_r, state_r = _run(agg, inputs, True, state)
    out_n, grads_n, state_n = _run(agg, inputs, False, state)
    scale = out_r.abs().max().item()
    torch.testing.assert_close(out_n, out_r, rtol=rtol, atol=rtol * scale)
    bias_grad = grads_r[-1] if agg.bn is not None else None
    for gn, gr in zip(grads_n, grads_r, strict=True):
        ref_scale = gr.abs().max().item()
        if gr is bias_grad:
            # The bias of the distance norm shifts all logits of a query alike, to which the softmax is
            # invariant: its gradient is rounding noise around 0, compared at the scale of the weight's.
            ref_scale = max(ref_scale, grads_r[-2].abs().max().item())
        tol = rtol if gn is grads_n[0] else grad_tol
        torch.testing.assert_close(gn, gr, rtol=tol, atol=tol * max(ref_scale, 1e-30))
    for key in state_r:  # (a 1×1 image in training has no distance: NaN statistics on both paths)
        torch.testing.assert_close(state_n[key], state_r[key], rtol=rtol, atol=0, equal_nan=True)
    return (out_n - out_r).abs().max().item() / max(scale, 1e-30)


def fix_distance_norm(agg: N3Aggregation2d) -> None:
    """Distance-norm parameters and running statistics away from their defaults (a non-trivial affine)."""
    if agg.bn is not None:
        with torch.no_grad():
            agg.bn.weight.fill_(0.6)
            agg.bn.bias.fill_(-0.2)
            agg.bn.running_mean.fill_(-2.0)
            agg.bn.running_var.fill_(3.0)


def _inputs(b: int, c: int, h: int, w: int, dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    e = 0.05 * torch.randn(b, 4, h, w, generator=g, dtype=dtype)
    log_t = 0.3 * torch.randn(b, 1, h, w, generator=g, dtype=dtype)
    return [x, e, log_t]


CASES = [  # (h, w), batch, dtype, k, training, options
    ((1, 1), 1, torch.float64, 7, True, {}),
    ((1, 1), 2, torch.float32, 7, False, {}),
    ((3, 3), 2, torch.float64, 7, True, {}),
    ((9, 14), 2, torch.float32, 7, False, {}),
    ((9, 14), 1, torch.float64, 1, True, {}),
    ((37, 501), 1, torch.float32, 7, False, {}),
    ((37, 501), 1, torch.float64, 7, True, {}),
    ((80, 80), 2, torch.float32, 7, True, {}),
    ((80, 80), 2, torch.float64, 1, False, {}),
    ((96, 131), 2, torch.float32, 7, True, {}),
    ((96, 131), 1, torch.float64, 7, False, {"update": "logits"}),
    ((61, 45), 2, torch.float32, 7, True, {"update": "logits"}),
    ((61, 45), 2, torch.float64, 3, False, {"method": "hard"}),
    ((50, 77), 1, torch.float32, 7, False, {"distance_norm": False, "query_tile": 3}),
    ((23, 31), 2, torch.float64, 3, False, {"patch": 4, "stride": 2, "window": 5, "query_tile": 2}),
    ((23, 31), 2, torch.float64, 3, True, {"patch": 6, "stride": 2, "window": 4}),
]


@pytest.mark.parametrize(("size", "batch", "dtype", "k", "training", "options"), CASES)
def test_blocks_match_the_reference(size: tuple[int, int], batch: int, dtype: torch.dtype, k: int, training: bool,
                                    options: dict) -> None:
    torch.manual_seed(0)
    agg = N3Aggregation2d(k=k, **options).to(dtype).train(training)
    fix_distance_norm(agg)
    # float64: everything within 1e-5; float32: embedding / temperature / norm gradients within 2e-4 (see _compare)
    _compare(agg, _inputs(batch, 3, *size, dtype, seed=size[0] * 1000 + size[1]),
             grad_tol=1e-5 if dtype == torch.float64 else 2e-4)


def test_block_with_cnns_matches_the_reference_under_autocast() -> None:
    torch.manual_seed(0)
    block = N3Block2d(in_channels=3, k=3, embed_features=8, embed_channels=4).train()
    x = torch.randn(2, 3, 45, 52)
    outs = []
    for reference in (True, False):
        block.n3aggregation.reference = reference
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs.append(block(x))
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5 * outs[0].abs().max().item())


@pytest.mark.parametrize("size", [(80, 80), (37, 51), (12, 30)])
def test_training_output_follows_a_channels_last_input_exactly(size: tuple[int, int]) -> None:
    """A channels-last block input (the local blocks' layout) gives a channels-last output, so the next convolution
    reads it without a copy; values and gradients are those of the NCHW input's."""
    torch.manual_seed(0)
    block = N3Block2d(in_channels=4, k=3, embed_features=8, embed_channels=4).double().train()
    x = torch.randn(2, 4, *size, dtype=torch.float64)
    g = torch.randn(2, 16, *size, dtype=torch.float64)
    runs = []
    for layout in (torch.contiguous_format, torch.channels_last):
        leaf = x.clone(memory_format=layout).requires_grad_()
        block.zero_grad(set_to_none=True)
        out = block(leaf)
        out.backward(g.clone(memory_format=layout))
        assert out.is_contiguous(memory_format=layout)
        runs.append((out.detach(), leaf.grad, [q.grad for q in block.parameters()]))
    (out0, gx0, gp0), (out1, gx1, gp1) = runs
    torch.testing.assert_close(out1, out0, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx1, gx0, rtol=1e-9, atol=1e-9 * gx0.abs().max().item())
    scale = max(b.abs().max().item() for b in gp0)  # some true gradients are 0 (a bias before a BN): rounding there
    for a, b in zip(gp1, gp0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9 * scale)


def test_progress_is_reported_per_band_of_query_tiles() -> None:
    agg = N3Aggregation2d(k=2, query_tile=4).eval()
    agg.native = False  # the PyTorch block path (the fused one: tests/nn/test_native.py)
    calls: list[tuple[int, int]] = []
    with torch.inference_mode():
        agg(torch.rand(1, 2, 60, 45), torch.rand(1, 3, 60, 45), torch.zeros(1, 1, 60, 45),
            progress=lambda i, n: calls.append((i, n)))
    # grid 11 × 8 patches, tiles of 4 × 4 queries: 3 bands of 2 tiles
    assert calls == [(i, 3) for i in range(1, 4)]


@pytest.mark.parametrize("size", [(37, 501), (130, 97), (12, 8)])
@pytest.mark.parametrize("spread_tiles", [1, 3])
def test_inference_mode_matches_the_reference(size: tuple[int, int], spread_tiles: int,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The no-autograd assembly of the output (written in place) and query tiles batched along a band."""
    monkeypatch.setattr(n3, "_SPREAD_TILES", spread_tiles)
    agg = N3Aggregation2d(k=7, query_tile=5).eval()
    agg.native = False  # the PyTorch block path (the fused one: tests/nn/test_native.py)
    x, e, log_t = _inputs(2, 8, *size, torch.float32, seed=7)
    with torch.inference_mode():
        got = agg(x, e, log_t)
        agg.reference = True
        expected = agg(x, e, log_t)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
