"""The N3 block on sets and images, checked against a direct (loop) implementation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from n3cli.nn.knn import continuous_knn
from n3cli.nn.n3 import N3Aggregation2d, N3Block2d, N3Set, _grid_padding


def reference_aggregation(x: torch.Tensor, e: torch.Tensor, log_t: torch.Tensor, k: int, p: int, s: int,
                          window: int) -> torch.Tensor:
    """Straight from the description: every query patch against the patches of its clamped window."""
    b, c, h, w = x.shape
    top, bottom = _grid_padding(h, p, s)
    left, right = _grid_padding(w, p, s)
    xp, ep, tp = (F.pad(v, (left, right, top, bottom)) for v in (x, e, log_t))
    hp, wp = xp.shape[-2:]
    nh, nw = (hp - p) // s + 1, (wp - p) // s + 1
    xs = F.unfold(xp, p, stride=s).transpose(1, 2)  # (B, N, C p²)
    es = F.unfold(ep, p, stride=s).transpose(1, 2)
    wh, ww = min(window, nh), min(window, nw)
    out = torch.zeros(b, nh * nw, k, c * p * p, dtype=x.dtype)
    for i in range(nh):
        for j in range(nw):
            r0 = min(max(i - wh // 2, 0), nh - wh)
            c0 = min(max(j - ww // 2, 0), nw - ww)
            cand = [r * nw + cc for r in range(r0, r0 + wh) for cc in range(c0, c0 + ww) if (r, cc) != (i, j)]
            q = i * nw + j
            t = math.exp(float(tp[0, 0, s * i + p // 2, s * j]) + math.log(0.1))
            for bi in range(b):
                t = math.exp(float(tp[bi, 0, s * i + p // 2, s * j]) + math.log(0.1))
                if not cand:
                    out[bi, q] = xs[bi, q]
                    continue
                dist = ((es[bi, cand] - es[bi, q]) ** 2).sum(-1)
                wts = continuous_knn(-dist, t, k)
                out[bi, q] = wts @ xs[bi, cand]
    vols = []
    count = F.fold(torch.ones(1, p * p, nh * nw, dtype=x.dtype), (hp, wp), p, stride=s)
    for j in range(k):
        v = F.fold(out[:, :, j].transpose(1, 2), (hp, wp), p, stride=s) / count
        vols.append(v[:, :, top: top + h, left: left + w] - x)
    return torch.cat([x, *vols], dim=1)


@pytest.mark.parametrize("size", [(23, 31), (40, 40), (9, 14), (1, 1)])
def test_image_aggregation_matches_reference(size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    h, w = size
    x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
    e = torch.rand(2, 4, h, w, generator=g, dtype=torch.float64)
    log_t = torch.rand(2, 1, h, w, generator=g, dtype=torch.float64)
    agg = N3Aggregation2d(k=3, patch=4, stride=2, window=5, distance_norm=False, query_tile=2).double().eval()
    expected = reference_aggregation(x, e, log_t, 3, 4, 2, 5)
    got = agg(x, e, log_t)
    assert got.shape == (2, 4 * 3, h, w)
    torch.testing.assert_close(got, expected)


def test_tiling_of_queries_does_not_change_the_result() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 8, 64, 72, generator=g, dtype=torch.float64)
    e = torch.rand(1, 8, 64, 72, generator=g, dtype=torch.float64)
    log_t = torch.zeros(1, 1, 64, 72, dtype=torch.float64)
    outs = [N3Aggregation2d(query_tile=q, distance_norm=False).double().eval()(x, e, log_t) for q in (1, 5, 100)]
    torch.testing.assert_close(outs[0], outs[1])
    torch.testing.assert_close(outs[0], outs[2])


def test_paper_defaults_give_224_candidates() -> None:
    agg = N3Aggregation2d()
    assert (agg.k, agg.patch, agg.stride, agg.window) == (7, 10, 5, 15)
    # 80x80 region: a 15x15 grid of patches, so every query sees the other 224 patches.
    assert (80 - agg.patch) // agg.stride + 1 == 15


def test_training_mode_normalises_distances_over_valid_entries() -> None:
    agg = N3Aggregation2d(k=2, patch=4, stride=2, window=5).train()
    x = torch.rand(2, 3, 20, 20, requires_grad=True)
    out = agg(x, torch.rand(2, 4, 20, 20), torch.zeros(2, 1, 20, 20))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert agg.bn.num_batches_tracked == 1 and agg.bn.running_mean.abs() > 0


@pytest.mark.parametrize("size", [(1, 1), (37, 501), (10, 10), (80, 80), (5, 200)])
def test_block_any_size(size: tuple[int, int]) -> None:
    block = N3Block2d(in_channels=8).eval()
    with torch.inference_mode():
        out = block(torch.rand(1, 8, *size))
    assert out.shape == (1, 64, *size) and torch.isfinite(out).all()


def test_block_gradients_reach_embedding_and_temperature() -> None:
    block = N3Block2d(in_channels=2, k=2, embed_features=8, embed_channels=3).train()
    out = block(torch.rand(2, 2, 30, 30))
    out.square().mean().backward()
    for net in (block.embedcnn, block.tempcnn):
        grads = [p.grad for p in net.parameters()]
        assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
        assert any(gr.abs().sum() > 0 for gr in grads)


def test_hard_selection_on_a_guide_image() -> None:
    block = N3Block2d(in_channels=2, k=3, embedding="input", method="hard").eval()
    x, guide = torch.rand(1, 2, 40, 40), torch.rand(1, 1, 40, 40)
    assert block(x, guide).shape == (1, 8, 40, 40)
    with pytest.raises(ValueError):
        block(x)


def _set_block(k: int = 3) -> N3Set:
    torch.manual_seed(0)
    return N3Set(k, embedding=nn.Linear(5, 4), temperature=nn.Linear(5, 1)).double()


def test_set_block_dense_equals_index_sets() -> None:
    block = _set_block()
    x = torch.rand(2, 9, 5, dtype=torch.float64)
    dense = block(x)
    n = 9
    everyone = torch.arange(n).expand(2, n, n)  # each query's candidates: all items (itself excluded inside)
    torch.testing.assert_close(block(x, everyone), dense)
    assert dense.shape == (2, 9, 4 * 5)
    torch.testing.assert_close(dense[..., :5], x)


def test_set_block_matches_direct_formula() -> None:
    block = _set_block(k=2)
    x = torch.rand(1, 6, 5, dtype=torch.float64)
    e, t = block.embedding(x)[0], block.temperature(x)[0].exp()
    out = block(x)[0].view(6, 3, 5)
    for q in range(6):
        others = [i for i in range(6) if i != q]
        d = ((e[others] - e[q]) ** 2).sum(-1)
        w = continuous_knn(-d, t[q], 2)
        torch.testing.assert_close(out[q, 1:], w @ x[0, others] - x[0, q])


def test_set_block_learned_scalar_temperature_gets_gradient() -> None:
    block = N3Set(2, embedding=nn.Linear(5, 3))
    block(torch.rand(2, 7, 5)).sum().backward()
    assert block.log_temperature.grad is not None and torch.isfinite(block.log_temperature.grad)


@pytest.mark.parametrize("training", [False, True])
def test_n3_math_stays_float32_under_autocast(training: bool) -> None:
    """Mixed precision: the aggregation (distances, selection, folding) is computed exactly as in float32."""
    torch.manual_seed(0)
    agg = N3Aggregation2d(k=3).train(training)
    x, e, log_t = torch.randn(2, 4, 30, 30), torch.randn(2, 8, 30, 30), torch.randn(2, 1, 30, 30)
    plain = agg(x, e, log_t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = agg(x.bfloat16(), e, log_t)  # a bf16 input is promoted, not the other way round
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, agg(x.bfloat16().float(), e, log_t), rtol=0, atol=0)
    assert plain.shape == mixed.shape
    s = N3Set(2, nn.Linear(4, 3))
    items = torch.randn(1, 10, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = s(items)
    torch.testing.assert_close(out.float(), s(items), rtol=1e-2, atol=1e-2)  # embedding Linear runs in bf16


def test_image_block_runs_in_float32_under_autocast() -> None:
    """Embedding and temperature CNNs too, by default: their bf16 gradients can lose direction (see N3Block2d.forward);
    ``bf16_cnns_in_training`` (``n3 train --set precision=bf16-all``) runs them in bf16, the aggregation in float32."""
    torch.manual_seed(0)
    block = N3Block2d(in_channels=4, k=2, embed_features=8, embed_channels=3).train()
    x = torch.randn(2, 4, 30, 30)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = block(x)
    torch.testing.assert_close(mixed, block(x), rtol=0, atol=0)
    block.bf16_cnns_in_training = True
    with torch.autocast("cpu", dtype=torch.bfloat16):
        e, log_t = block.embedcnn(x), block.tempcnn(x)
        assert e.dtype == log_t.dtype == torch.bfloat16
        mixed = block(x)
    assert mixed.dtype == torch.float32 and mixed.requires_grad
    torch.testing.assert_close(mixed, block.n3aggregation(x, e.float(), log_t.float()), rtol=0, atol=0)
    mixed.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.embedcnn.parameters())
    with torch.autocast("cpu", dtype=torch.float16):  # fp16 (not measured): float32 whatever the flag
        half = block(x)
    torch.testing.assert_close(half, block(x), rtol=0, atol=0)


def test_image_block_inference_runs_its_cnns_in_the_callers_precision() -> None:
    """Without autograd the embedding and temperature CNNs run under autocast like the local CNNs (their float32
    was for the gradients); the aggregation still computes in float32. In float32 nothing changes."""
    torch.manual_seed(0)
    block = N3Block2d(in_channels=4, k=2, embed_features=8, embed_channels=3).eval()
    block.n3aggregation.native = False  # the same aggregation code with and without autograd (exact comparison)
    x = torch.randn(2, 4, 30, 30)
    with torch.inference_mode():
        torch.testing.assert_close(block(x), torch.enable_grad()(block)(x), rtol=0, atol=0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            e, log_t = block.embedcnn(x), block.tempcnn(x)
            assert e.dtype == log_t.dtype == torch.bfloat16
            mixed = block(x)
        assert mixed.dtype == torch.float32
        torch.testing.assert_close(mixed, block.n3aggregation(x, e.float(), log_t.float()), rtol=0, atol=0)
        with torch.autocast("cpu", dtype=torch.float16):  # fp16 (not measured): the block stays in float32
            torch.testing.assert_close(block(x), torch.enable_grad()(block)(x), rtol=0, atol=0)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_distance_norm_is_batchnorm_over_the_valid_entries(momentum: float | None) -> None:
    from n3cli.nn.n3 import DistanceNorm

    torch.manual_seed(0)
    ours, ref = DistanceNorm(), nn.BatchNorm1d(1)
    for m in (ours, ref):
        m.momentum = momentum
        with torch.no_grad():
            m.weight.fill_(1.7)
            m.bias.fill_(-0.3)
    alpha = torch.randn(2, 5, 7) * 3 + 1
    valid = torch.rand(1, 5, 7) > 0.3
    for _ in range(2):
        out = ours(alpha, valid)
        expect = ref(alpha.masked_select(valid.expand_as(alpha)).view(-1, 1)).view(-1)
        torch.testing.assert_close(out.masked_select(valid.expand_as(alpha)), expect)
        assert torch.equal(out.masked_select(~valid.expand_as(alpha)), alpha.masked_select(~valid.expand_as(alpha)))
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)
    assert ours.num_batches_tracked == ref.num_batches_tracked == 2


def test_distance_norm_without_valid_entries_keeps_its_statistics() -> None:
    """An input smaller than a patch has no candidate: the training norm passes it through and counts nothing
    (the empty mean and variance were NaN and stuck in the running statistics for good)."""
    from n3cli.nn.n3 import DistanceNorm

    norm = DistanceNorm()
    alpha = torch.randn(1, 1, 1)
    for inputs, valid in ((alpha, torch.zeros(1, 1, 1, dtype=torch.bool)), (alpha[:, :0], None)):
        assert norm(inputs, valid).shape == inputs.shape
    assert torch.equal(norm.running_mean, torch.zeros(1)) and torch.equal(norm.running_var, torch.ones(1))
    assert norm.num_batches_tracked == 0
    torch.testing.assert_close(norm(alpha, torch.zeros(1, 1, 1, dtype=torch.bool)), alpha)
