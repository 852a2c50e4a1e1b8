"""N3 aggregation on sets and on images (paper Sec. 4).

The math shared by both forms lives in :func:`neighbour_weights`: squared Euclidean distances
between embeddings, logits α = -D (optionally normalised), temperature and the selection rule from
:mod:`n3cli.nn.knn`; :func:`neighbour_volumes` adds the weighted sums of candidates (Eq. 11), which the
image form computes per neighbour in the layout its folding takes.

* :class:`N3Set` — items (B, N, F) with embeddings (B, N, E): candidates are all other items of the
  set, or an index set per query (the form used for correspondence classification, Sec. 5.5).
* :class:`N3Aggregation2d` — images: 10×10 patches with stride 5, each query patch matched against
  the patches of a 15×15 window of patch positions around it (224 candidates), neighbour volumes
  folded back to the image by averaging overlapping patches. It works on tiles of query patches so
  that memory stays linear in the pixel count (no all-pairs distances, no whole-image gather), and,
  since the stride divides the patch size, on blocks of stride × stride pixels: distances from block
  inner products, Eq. 11 and the folding as one matrix product per tile (see ``docs/speed.md``).
* :class:`N3Block2d` — the image N3 block: embedding CNN, temperature CNN and the aggregation.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from . import native
from .knn import Selection, Update, select

_NEG_INF = float("-inf")
#: Query tiles whose block spread matrices are built and multiplied together (inference; 1, 2, 4, 8 at
#: 1024², one thread: 3.73, 3.82, 3.91, 3.91 s per block: the spread matrices stay in cache).
_SPREAD_TILES = 1


def squared_distances(queries: Tensor, candidates: Tensor) -> Tensor:
    """||q - c||² for queries (B, Q, E) and candidates (B, M, E) -> (B, Q, M), via one matmul.

    Both sides are first centred on the candidates' mean (distances are translation invariant),
    which keeps the cancellation error of |q|² + |c|² - 2q·c small in float32.
    """
    centre = candidates.mean(dim=-2, keepdim=True)
    queries, candidates = queries - centre, candidates - centre
    qq = queries.square().sum(-1, keepdim=True)
    cc = candidates.square().sum(-1).unsqueeze(-2)
    return (qq + cc - 2.0 * queries @ candidates.transpose(-1, -2)).clamp_min(0.0)


class DistanceNorm(nn.BatchNorm1d):
    """BatchNorm over all valid distance values (one channel), as the published checkpoints have.

    In training mode the statistics are taken over the valid (unmasked) entries only, and the
    normalisation is computed in float64: with ~800k distances per batch, BatchNorm's float32 backward
    lost much of the gradient's precision (figures: docs/training.md, "Precision of the N3 gradients").
    """

    def __init__(self) -> None:
        super().__init__(1)
        #: Normalise with the running statistics in training mode too, and never update them (frozen BN while
        #: fine-tuning: :mod:`n3cli.train.frozen_bn`). Not part of the state dict.
        self.frozen = False

    @property
    def batch_statistics(self) -> bool:
        """Whether forward normalises by the statistics of its input (training mode, not frozen)."""
        return self.training and not self.frozen

    def eval_affine(self) -> tuple[Tensor, Tensor]:
        """(scale, shift) of the running-statistics norm of distances: α = shift − scale · D for α = −D."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, alpha: Tensor, valid: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if not self.batch_statistics:
            scale, shift = self.eval_affine()
            return torch.addcmul(shift, alpha, scale)
        if self._can_run_native(alpha, valid):
            assert valid is not None
            stats: list[float] = []
            out = _NativeDistanceNorm.apply(alpha, self.weight, self.bias, valid, self.eps, stats)
            mean_, var_, count = stats
            if self.track_running_stats:
                self._track(torch.tensor(mean_, dtype=torch.float64), torch.tensor(var_, dtype=torch.float64),
                            int(count))
            return out
        mask = None if valid is None else valid.expand_as(alpha)
        flat = alpha.reshape(-1) if mask is None else alpha.masked_select(mask)
        if flat.numel() == 0:  # no candidate at all (an input smaller than a patch): nothing to normalise or count
            return alpha
        x = flat.double()
        mean, var = x.mean(), x.var(unbiased=False)
        if self.track_running_stats:
            self._track(mean.detach(), var.detach(), x.numel())
        normed = ((x - mean) / torch.sqrt(var + self.eps)).to(alpha.dtype) * self.weight + self.bias
        return normed.view_as(alpha) if mask is None else alpha.masked_scatter(mask, normed)

    def _track(self, mean: Tensor, var: Tensor, n: int) -> None:
        """Update the running statistics with a batch's (float64) mean and biased variance of n distances."""
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            f = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            unbiased = var * n / max(n - 1, 1)
            self.running_mean.mul_(1 - f).add_(f * mean.to(self.running_mean.dtype))
            self.running_var.mul_(1 - f).add_(f * unbiased.to(self.running_var.dtype))

    def _can_run_native(self, alpha: Tensor, valid: Tensor | None) -> bool:
        """The C norm serves float32 CPU distances (B, Q, M) with a mask (1, Q, M) that leaves some entry valid."""
        return (valid is not None and alpha.dim() == 3 and valid.dim() == 3 and valid.shape[0] == 1
                and valid.shape[1:] == alpha.shape[1:] and valid.dtype == torch.bool and _native_float32(alpha)
                and self.weight is not None and self.bias is not None and alpha.numel() > 0 and bool(valid.any()))


class _NativeDistanceNorm(torch.autograd.Function):
    """:class:`DistanceNorm`'s batch-statistics forward and backward in C (n3_distance_norm_*, in double): the
    float64 autograd version's two dozen passes over the distances become five. ``stats`` receives (mean, biased
    variance, count) for the running statistics."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, weight: Tensor, bias: Tensor, valid: Tensor, eps: float,
                stats: list[float]) -> Tensor:
        b, q, m = alpha.shape
        a2, v2 = alpha.contiguous().view(b * q, m), valid.contiguous().view(q, m)
        out, mean, var, count = native.distance_norm(a2, v2, eps, float(weight), float(bias))
        stats.extend((mean, var, count))
        ctx.save_for_backward(a2, v2, weight)
        ctx.stats = (mean, var, eps)
        return out.view(b, q, m)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        a2, v2, weight = ctx.saved_tensors
        mean, var, eps = ctx.stats
        g2 = grad.float().contiguous().view(a2.shape)
        galpha, sg, sgx = native.distance_norm_backward(g2, a2, v2, mean, var, eps, float(weight))
        return (galpha.view(grad.shape), torch.full_like(weight, sgx), torch.full_like(weight, sg), None, None, None)


def full_precision(*tensors: Tensor) -> tuple[contextlib.AbstractContextManager[Any], list[Tensor]]:
    """Under CPU/CUDA autocast: a context that turns it off, and the tensors in float32.

    Distances are differences of large dot products (cancellation) and the selection divides by small
    temperatures, so the N3 math always runs in float32, even when the convolutions around it run in
    bfloat16 / float16 (mixed-precision training, half-precision inference).
    """
    dev = tensors[0].device.type
    if dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev):
        return torch.autocast(dev, enabled=False), [t.float() for t in tensors]
    return contextlib.nullcontext(), list(tensors)


def neighbour_weights(queries: Tensor, candidates: Tensor, temperature: Tensor | float, k: int,
                      valid: Tensor | None = None, norm: DistanceNorm | None = None,
                      method: Selection = "continuous", update: Update = "alpha") -> Tensor:
    """The k weight vectors of each query over the candidates, (B, Q, k, M) (Eqs. 4 and 8-10).

    queries (B, Q, E), candidates (B, M, E), temperature (B, Q, 1) or a float, ``valid`` a boolean mask
    broadcastable to (B, Q, M). Always computed in float32 (see :func:`full_precision`).
    """
    ctx, (queries, candidates) = full_precision(queries, candidates)
    if isinstance(temperature, Tensor):
        temperature = temperature.float()
    with ctx:
        alpha = -squared_distances(queries, candidates)  # Eq. 4
        if norm is not None:
            alpha = norm(alpha, valid)
        if valid is not None:
            alpha = alpha.masked_fill(~valid, _NEG_INF)
        return select(alpha, temperature, k, method, update=update)


def neighbour_volumes(queries: Tensor, candidates: Tensor, values: Tensor, temperature: Tensor | float,
                      k: int, valid: Tensor | None = None, norm: DistanceNorm | None = None,
                      method: Selection = "continuous", update: Update = "alpha") -> Tensor:
    """The core of an N3 block for one group of queries (always in float32, see :func:`full_precision`).

    queries (B, Q, E), candidates (B, M, E), values (B, M, F) (what is aggregated), temperature
    (B, Q, 1) or a float, ``valid`` a boolean mask broadcastable to (B, Q, M). Returns the k
    continuous neighbours (B, Q, k, F) (Eq. 11). A query without any valid candidate gets zeros
    (callers handle that case).
    """
    weights = neighbour_weights(queries, candidates, temperature, k, valid, norm, method, update)
    ctx, (values,) = full_precision(values)
    with ctx:
        b, q, _, m = weights.shape
        return (weights.reshape(b, q * k, m) @ values).view(b, q, k, -1)  # Eq. 11


class N3Set(nn.Module):
    """N3 block for set data: output concat(x, N_1 - x, ..., N_k - x) of shape (B, N, (k+1)·F).

    ``embedding`` and ``temperature`` are networks on the items (e.g. MLPs / 1×1 convolutions
    over (B, N, F)); ``temperature`` outputs log t per item, or is None for a learned scalar.
    ``candidates`` in :meth:`forward` optionally restricts each query to an index set (B, N, M).
    """

    def __init__(self, k: int, embedding: nn.Module, temperature: nn.Module | None = None,
                 method: Selection = "continuous", update: Update = "alpha") -> None:
        super().__init__()
        self.k, self.method, self.update = k, method, update
        self.embedding = embedding
        self.temperature = temperature
        if temperature is None:
            self.log_temperature = nn.Parameter(torch.zeros(()))

    @property
    def out_features_factor(self) -> int:
        return self.k + 1

    def forward(self, x: Tensor, candidates: Tensor | None = None) -> Tensor:
        b, n, f = x.shape
        e = self.embedding(x)
        log_t = self.temperature(x) if self.temperature is not None else self.log_temperature.expand(b, n, 1)
        t = log_t.reshape(b, n, 1).exp()
        if candidates is None:  # all other items of the set
            valid = ~torch.eye(n, dtype=torch.bool, device=x.device).unsqueeze(0)
            nb = neighbour_volumes(e, e, x, t, self.k, valid, method=self.method, update=self.update)
        else:  # an index set per query, gathered: (B, N, M, ·)
            m = candidates.shape[-1]
            idx = candidates.reshape(b, n * m, 1)
            ce = e.gather(1, idx.expand(-1, -1, e.shape[-1])).view(b * n, m, -1)
            cx = x.gather(1, idx.expand(-1, -1, f)).view(b * n, m, f)
            valid = (candidates != torch.arange(n, device=x.device).view(1, n, 1)).view(b * n, 1, m)
            nb = neighbour_volumes(e.reshape(b * n, 1, -1), ce, cx, t.reshape(b * n, 1, 1), self.k, valid,
                                   method=self.method, update=self.update).view(b, n, self.k, f)
        return torch.cat([x.unsqueeze(2), nb - x.unsqueeze(2)], dim=2).reshape(b, n, (self.k + 1) * f)


def _grid_padding(size: int, patch: int, stride: int) -> tuple[int, int]:
    """Zero padding (before, after) so that (size - patch) is a non-negative multiple of stride."""
    padded = max(size, patch)
    padded += (-(padded - patch)) % stride
    extra = padded - size
    return extra // 2, extra - extra // 2


def _window_start(index: Tensor, window: int, grid: int) -> Tensor:
    """First patch position of the candidate window, centred on the query and clamped to the grid."""
    return (index - window // 2).clamp(0, grid - window)


@functools.lru_cache(maxsize=64)
def _window_layout(starts_r: tuple[int, ...], own_r: tuple[int, ...], starts_c: tuple[int, ...],
                   own_c: tuple[int, ...], wh: int, ww: int, device: str) -> tuple[Tensor | None, Tensor]:
    """Index (Q, wh·ww) of each query's window into its tile's region and the mask (1, Q, wh·ww) of valid
    candidates, from the windows' first rows / cols relative to the region and the queries' places in their
    windows. The index is None where every window is the whole region."""
    with torch.inference_mode(False):  # cached: usable under autograd after a call in inference mode
        return _make_window_layout(starts_r, own_r, starts_c, own_c, wh, ww, device)


def _make_window_layout(starts_r: tuple[int, ...], own_r: tuple[int, ...], starts_c: tuple[int, ...],
                        own_c: tuple[int, ...], wh: int, ww: int, device: str) -> tuple[Tensor | None, Tensor]:
    sr, sc = torch.tensor(starts_r, device=device), torch.tensor(starts_c, device=device)
    ar, ac = torch.arange(wh, device=device), torch.arange(ww, device=device)
    orow, ocol = torch.tensor(own_r, device=device), torch.tensor(own_c, device=device)
    is_self = (ar[None] == orow[:, None])[:, None, :, None] & (ac[None] == ocol[:, None])[None, :, None, :]
    valid = (~is_self).reshape(1, len(starts_r) * len(starts_c), wh * ww)
    height, width = starts_r[-1] + wh, starts_c[-1] + ww
    if height == wh and width == ww:
        return None, valid
    rel_r, rel_c = sr[:, None] + ar[None], sc[:, None] + ac[None]  # (tr, wh), (tc, ww) within the region
    index = (rel_r[:, None, :, None] * width + rel_c[None, :, None, :]).reshape(valid.shape[1:])
    return index, valid


@functools.lru_cache(maxsize=64)
def _spread_index(starts_r: tuple[int, ...], starts_c: tuple[int, ...], wh: int, ww: int, k: int, nb: int,
                  device: str) -> Tensor:
    """Where the weights (Q, k, wh·ww) of a tile's queries land in its block spread matrix.

    The spread matrix is (TR + nb - 1, TC + nb - 1, k, RH + nb - 1, RW + nb - 1): destination blocks of the
    tile, neighbour, source blocks of the region. Weight (q, j, m) of query patch (i, c) for candidate patch
    (a, b) (region coordinates) goes, for each sub-block (u, v), to destination (i + u, c + v) and source
    (a + u, b + v). Returns the flat indices (nb², Q·k·wh·ww).
    """
    with torch.inference_mode(False):  # cached: usable under autograd after a call in inference mode
        tr, tc = len(starts_r), len(starts_c)
        sh, sw = starts_r[-1] + wh + nb - 1, starts_c[-1] + ww + nb - 1  # source blocks of the region
        dw = tc + nb - 1
        i = torch.arange(tr, device=device).view(tr, 1, 1, 1, 1)
        c = torch.arange(tc, device=device).view(1, tc, 1, 1, 1)
        j = torch.arange(k, device=device).view(1, 1, k, 1, 1)
        a = (torch.tensor(starts_r, device=device)[:, None] + torch.arange(wh, device=device)).view(tr, 1, 1, wh, 1)
        bb = (torch.tensor(starts_c, device=device)[:, None] + torch.arange(ww, device=device)).view(1, tc, 1, 1, ww)
        out = []
        for u in range(nb):
            for v in range(nb):
                flat = (((i + u) * dw + (c + v)) * k + j) * (sh * sw) + (a + u) * sw + (bb + v)
                out.append(flat.reshape(-1))
        return torch.stack(out)


class _Spread(torch.autograd.Function):
    """spread[:, index[s, i]] += weights[:, i] for every sub-block s, with a gather as the backward.

    Autograd's own version of the in-place scatter-adds cloned the whole spread matrix (and its gradient)
    for each of them; that was a third of the training step's aggregation time.
    """

    @staticmethod
    def forward(ctx: Any, weights: Tensor, index: Tensor, size: int) -> Tensor:
        ctx.save_for_backward(index)
        spread = weights.new_zeros(weights.shape[0], size)
        for idx in index:
            spread.scatter_add_(1, idx.expand(weights.shape[0], -1), weights)
        return spread

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (index,) = ctx.saved_tensors
        grad_weights = None
        for idx in index:
            g = grad.gather(1, idx.expand(grad.shape[0], -1))
            grad_weights = g if grad_weights is None else grad_weights + g
        assert grad_weights is not None
        return grad_weights, None, None


#: Run the training path's spread matrix (:class:`_SpreadWhole`), the patches' inner products from their blocks'
#: (:class:`_PatchInner`) and channels-last output (:class:`_BlocksToPixels`) through the C kernels
#: (:mod:`n3cli.nn.native`) where they could be built, forward and backward; False runs the PyTorch code (the
#: reference the tests compare against).
NATIVE_TRAINING = True


def _native_float32(t: Tensor) -> bool:
    return NATIVE_TRAINING and t.device.type == "cpu" and t.dtype == torch.float32 and native.available()


def _spread_whole(weights: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
    """spread (B, DH·DW·k·SH·SW) = the sum over sub-blocks (u, v) of weights (B, tr·tc·k·wh·ww) added to the views
    :func:`_shifted_views` (the same floats in C and in PyTorch)."""
    if _native_float32(weights):  # one pass (n3_spread_whole_forward)
        return native.spread_whole(weights.contiguous(), shape)
    tr, tc, k, wh, ww, nb = shape
    spread = weights.new_zeros(weights.shape[0], native.spread_size(shape))
    w = weights.view(weights.shape[0], tr, tc, k, wh, ww)
    for view in _shifted_views(spread, shape):
        view.add_(w)
    return spread


def _sum_shifted(spread: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
    """The adjoint of :func:`_spread_whole`: the sum (B, tr·tc·k·wh·ww) of the views :func:`_shifted_views` of
    spread (B, DH·DW·k·SH·SW), the first copied and the others added in order (the same floats in C and in PyTorch)."""
    if _native_float32(spread):  # one pass (n3_spread_whole_backward)
        return native.spread_whole_backward(spread.contiguous(), shape)
    views = _shifted_views(spread.contiguous(), shape)
    out = views[0].clone(memory_format=torch.contiguous_format)
    for view in views[1:]:
        out.add_(view)
    return out.view(spread.shape[0], -1)


def _shifted_views(spread: Tensor, shape: tuple[int, int, int, int, int, int]) -> list[Tensor]:
    """The nb² views (B, tr, tc, k, wh, ww) of a matrix (B, DH, DW, k, SH, SW), DH = tr + nb - 1 and so on, that
    sub-blocks (u, v) = (0, 0), (0, 1), ... touch: [:, u: u + tr, v: v + tc, :, u: u + wh, v: v + ww]."""
    tr, tc, k, wh, ww, nb = shape
    sw = ww + nb - 1
    r2 = (wh + nb - 1) * sw
    r1 = k * r2
    r0 = (tc + nb - 1) * r1
    size, strides = (spread.shape[0], tr, tc, k, wh, ww), (spread.stride(0), r0, r1, r2, sw, 1)
    return [spread.as_strided(size, strides, spread.storage_offset() + u * r0 + v * r1 + u * sw + v)
            for u in range(nb) for v in range(nb)]


class _SpreadWhole(torch.autograd.Function):
    """:class:`_Spread` where every query's window is the whole region (the tile of training, when the window covers the
    grid): weight (q, j, m) of query patch (i, c) for candidate (a, b) lands at destination (i + u, c + v) and source
    (a + u, b + v), so each sub-block (u, v) is one strided view of the spread matrix to add the weights to, and the
    backward the sum of the same views: no index, and rows of ww contiguous floats instead of scattered ones."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
        ctx.shape = shape
        return _spread_whole(weights, shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _sum_shifted(grad, ctx.shape), None


class _PatchInner(torch.autograd.Function):
    """The patches' inner products from their blocks' (:func:`_block_distances`): gram (B, qh·qw·ch·cw) of blocks to
    (B, tr·tc·rh·rw), the sum over sub-blocks (u, v) of gram[:, u: u + tr, v: v + tc, u: u + rh, v: v + rw]. That is
    :func:`_sum_shifted` with k = 1, so its backward is :func:`_spread_whole`: one matrix filled instead of nb² zeroed
    copies of the whole gram (autograd's backward of each slice) added up."""

    @staticmethod
    def forward(ctx: Any, gram: Tensor, shape: tuple[int, int, int, int, int, int]) -> Tensor:
        ctx.shape = shape
        return _sum_shifted(gram, shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _spread_whole(grad, ctx.shape), None


def _aggregate_translated(weights: Tensor, src: Tensor, nb: int) -> Tensor:
    """Eq. 11 per destination block for a tile whose queries' windows are their own translates (window of
    query i starts at region row i, same for columns: every tile away from the grid's edges), no autograd.

    weights (B, TR, TC, k, wh, ww), src (B, SH, SW, F) the region's source blocks (contiguous). Destination
    block (i + u, j + v) gets source block (i + a + u, j + b + v): the source row is the destination row
    plus a, whatever the sub-block (u, v). So the spread matrix is kept per destination row over only its
    wh source rows (all SW columns), each sub-block (u, v) one strided view to add the weights to, and the
    product is one matrix per destination row against an overlapping window of src rows (a strided view,
    no copy): (TR + 14)/15 fewer multiply-adds than against the whole region (≈ 35 % at 8 × 8 tiles).
    Returns (B, TR + nb - 1, TC + nb - 1, k, F).
    """
    bq, tr, tc, k, wh, ww = weights.shape
    _, sh, sw, f = src.shape
    dh, dw = tr + nb - 1, tc + nb - 1
    spread = weights.new_zeros(bq, dh, dw, k, wh, sw)
    r2 = wh * sw
    r1 = k * r2
    r0 = dw * r1
    strides = (dh * r0, r0, r1 + 1, r2, sw, 1)
    for u in range(nb):
        for v in range(nb):
            spread.as_strided(weights.shape, strides, u * r0 + v * (r1 + 1)).add_(weights)
    out = [torch.bmm(spread[i].view(dh, dw * k, r2), src[i].as_strided((dh, r2, f), (sw * f, f, 1)))
           for i in range(bq)]
    return torch.stack(out).view(bq, dh, dw, k, f)


def _stack(views: list[Tensor]) -> Tensor:
    """Equal-shaped (B, ...) tensors as one (B·n, ...) batch, batch-major (no copy for a single one)."""
    return views[0] if len(views) == 1 else torch.stack(views, 1).flatten(0, 1)


def _block_distances(queries: Tensor, candidates: Tensor, nb: int) -> Tensor:
    """Squared distances between patches of nb × nb blocks, from the blocks' inner products.

    queries (B, TR + nb - 1, TC + nb - 1, F) and candidates (B, RH + nb - 1, RW + nb - 1, F) are blocks (F
    values each); patch (i, j) is blocks [i, i + nb) × [j, j + nb). Returns (B, TR·TC, RH·RW). Both sides are
    centred on the candidate blocks' mean first (a translation of every patch alike, see
    :func:`squared_distances`); the patches' inner products are sums of nb² block inner products taken at
    the same offset, so the matrix product runs on blocks (nb² times fewer values per pair).
    """
    b, qh, qw, f = queries.shape
    _, ch, cw, _ = candidates.shape
    tr, tc, rh, rw = qh - nb + 1, qw - nb + 1, ch - nb + 1, cw - nb + 1
    centre = candidates.mean(dim=(1, 2), keepdim=True)
    if (queries.shape, queries.stride(), queries.data_ptr()) == (candidates.shape, candidates.stride(),
                                                                   candidates.data_ptr()):
        # one tensor (the tile of training: every patch against every other): centred and normed once
        candidates = candidates - centre
        queries = candidates
        qn = cn = candidates.square().sum(-1)
    else:
        queries, candidates = queries - centre, candidates - centre
        qn, cn = queries.square().sum(-1), candidates.square().sum(-1)  # block norms
    # -2 q·c (scaling by -2 is exact, and costs a pass over the small side only)
    gram = ((-2.0 * queries).reshape(b, qh * qw, f) @ candidates.reshape(b, ch * cw, f).transpose(1, 2))
    inner = _PatchInner.apply(gram.view(b, -1), (tr, tc, 1, rh, rw, nb))
    q_sq, c_sq = qn[:, :tr, :tc], cn[:, :rh, :rw]
    for u in range(nb):
        for v in range(nb):
            if u or v:
                q_sq = q_sq + qn[:, u: u + tr, v: v + tc]
                c_sq = c_sq + cn[:, u: u + rh, v: v + rw]
    d = q_sq.reshape(b, tr * tc, 1) + c_sq.reshape(b, 1, rh * rw) + inner.view(b, tr * tc, rh * rw)
    return d.clamp_min(0.0)


class N3Aggregation2d(nn.Module):
    """Continuous nearest neighbours of image patches and their folding back to the image.

    forward(x, e, log_t) with block input x (B, C, H, W) (what is aggregated), embedding e
    (B, E, H, W) and log-temperature log_t (B, 1, H, W) returns concat(x, N_1 - x, ..., N_k - x),
    (B, (k+1)·C, H, W). Temperature of a patch: t = exp(log_t + log(temperature_scale)) at the
    patch's pixel (p/2, 0). Any H, W >= 1 works: the grid is zero-padded, the window shrinks
    to the grid when the image is small.

    Two implementations with the same results: :meth:`_forward_blocks` (the default) and the original
    :meth:`_forward_reference` (``reference = True``; also used for the "concrete" selection, whose random
    draws follow the candidate layout, and when the stride does not divide the patch size).
    ``progress(i, n)`` is called after each band of query tiles (a row of tiles).
    """

    def __init__(self, k: int = 7, patch: int = 10, stride: int = 5, window: int = 15,
                 method: Selection = "continuous", update: Update = "alpha", distance_norm: bool = True,
                 temperature_scale: float = 0.1, query_tile: int = 8) -> None:
        super().__init__()
        self.k, self.patch, self.stride, self.window = k, patch, stride, window
        self.method, self.update = method, update
        self.log_temperature_offset = math.log(temperature_scale)
        # Inference: query_tile² query patches per tile (training: one tile, the whole grid). Larger tiles waste
        # more of the candidate region ((q + window - 1)² patches); block path, one block at 512², one thread:
        # 5, 6, 8 within noise of each other, 10 slower (docs/speed.md).
        self.query_tile = query_tile
        self.bn = DistanceNorm() if distance_norm else None
        #: Run the original implementation (patch unfold / fold, tile-region candidates) instead of the
        #: block one; kept as the reference the tests compare against. Not part of the state dict.
        self.reference = False
        #: Use the fused C kernel (:mod:`n3cli.nn.native`) for inference on the CPU where it could be built.
        self.native = True

    def extra_repr(self) -> str:
        return (f"k={self.k}, patch={self.patch}, stride={self.stride}, window={self.window}, "
                f"method={self.method}, update={self.update}")

    def _patches(self, img: Tensor, rows: tuple[int, int], cols: tuple[int, int]) -> Tensor:
        """Patches at grid rows [r0, r1) × cols [c0, c1) as (B, n, C·p²), row-major."""
        p, s = self.patch, self.stride
        region = img[:, :, s * rows[0]: s * (rows[1] - 1) + p, s * cols[0]: s * (cols[1] - 1) + p]
        return F.unfold(region, p, stride=s).transpose(1, 2)

    def forward(self, x: Tensor, e: Tensor, log_t: Tensor,
                progress: Callable[[int, int], None] | None = None) -> Tensor:
        ctx, (x, e, log_t) = full_precision(x, e, log_t)  # the folding sums too
        with ctx:
            if self.reference or self.method == "concrete" or self.patch % self.stride:
                return self._forward_reference(x, e, log_t, progress)
            if self._can_run_native(x, e, log_t):
                return self._forward_native(x, e, log_t, progress)
            return self._forward_blocks(x, e, log_t, progress)

    def _can_run_native(self, x: Tensor, e: Tensor, log_t: Tensor) -> bool:
        """The fused C kernel serves inference of the continuous selection on float32 CPU tensors."""
        if not self.native or self.method != "continuous" or (self.bn is not None and self.bn.batch_statistics):
            return False
        if not 1 <= self.k <= 64 or self.window < 1:  # the kernel's limits (k: its per-block scratch)
            return False
        if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in (x, e, log_t)):
            return False
        if torch.is_grad_enabled() and any(t.requires_grad for t in (x, e, log_t, *self.parameters())):
            return False
        return native.available()

    def _forward_native(self, x: Tensor, e: Tensor, log_t: Tensor,
                        progress: Callable[[int, int], None] | None) -> Tensor:
        """The same aggregation as :meth:`_forward_blocks`, fused in C (:mod:`n3cli.nn.native`)."""
        h, w = x.shape[-2:]
        p, s = self.patch, self.stride
        pads = self._grid_pads(h, w)
        top, bottom, left, right = pads
        pad = (0, 0, left, right, top, bottom)  # channels-last: (B, H, W, C)
        xp = F.pad(x.permute(0, 2, 3, 1), pad).contiguous()
        ep = F.pad(e.permute(0, 2, 3, 1), pad).contiguous()
        t_grid = self._temperatures(log_t, pads).contiguous()
        norm = None
        if self.bn is not None:
            scale, shift = self.bn.eval_affine()
            norm = (float(scale.float()), float(shift.float()))
        return native.aggregate(xp, ep, t_grid, patch=p, stride=s, window=self.window, k=self.k, norm=norm,
                                update_alpha=self.update == "alpha", size=(h, w), offset=(top, left),
                                progress=progress)

    def _grid_pads(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Zero padding (top, bottom, left, right) of an h × w image to whole patch strides."""
        return (*_grid_padding(h, self.patch, self.stride), *_grid_padding(w, self.patch, self.stride))

    def _temperatures(self, log_t: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
        """The temperature of every patch (B, nh, nw), taken at its pixel (p/2, 0) of the padded log-temperature."""
        top, bottom, left, right = pads
        h, w = log_t.shape[-2:]
        p, s = self.patch, self.stride
        nh, nw = (h + top + bottom - p) // s + 1, (w + left + right - p) // s + 1
        tp = F.pad(log_t[:, 0], (left, right, top, bottom)) if any(pads) else log_t[:, 0]
        return (tp[:, p // 2:: s, 0:: s][:, :nh, :nw] + self.log_temperature_offset).exp()

    def _padded(self, x: Tensor, e: Tensor, log_t: Tensor) -> tuple[Tensor, Tensor, Tensor, tuple[int, int, int, int]]:
        """Input and embedding zero-padded to whole patch strides, the temperature of every patch (B, nh, nw) and
        the padding (top, bottom, left, right)."""
        pads = self._grid_pads(*x.shape[-2:])
        top, bottom, left, right = pads
        pad = (left, right, top, bottom)
        if not any(pad):  # (F.pad copies even then: two passes over x and e, and back)
            return x, e, self._temperatures(log_t, pads), pads
        return F.pad(x, pad), F.pad(e, pad), self._temperatures(log_t, pads), pads

    def _forward_reference(self, x: Tensor, e: Tensor, log_t: Tensor,
                           progress: Callable[[int, int], None] | None) -> Tensor:
        """The original implementation: tiles of queries against their whole candidate region, Eq. 11 on
        whole patches per neighbour, F.fold back to pixels."""
        b, c, h, w = x.shape
        p, s, k = self.patch, self.stride, self.k
        x, e = x.contiguous(), e.contiguous()  # unfold/fold are fastest in NCHW
        xp, ep, t_grid, (top, bottom, left, right) = self._padded(x, e, log_t)
        hp, wp = h + top + bottom, w + left + right
        nh, nw = t_grid.shape[-2:]
        wh, ww = min(self.window, nh), min(self.window, nw)
        # In training, one tile spans the whole grid: batch statistics of the distance norm then
        # cover every distance, as in a whole-image forward pass.
        qt = max(nh, nw) if self.training else self.query_tile
        acc = xp.new_zeros(b, k * c, hp, wp)
        tiles = [(r, cc) for r in range(0, nh, qt) for cc in range(0, nw, qt)]
        dev = x.device
        for i, (r0, c0) in enumerate(tiles):
            r1, c1 = min(r0 + qt, nh), min(c0 + qt, nw)
            q_rows, q_cols = torch.arange(r0, r1, device=dev), torch.arange(c0, c1, device=dev)
            row_start, col_start = _window_start(q_rows, wh, nh), _window_start(q_cols, ww, nw)
            cr0, cr1 = int(row_start[0]), int(row_start[-1]) + wh
            cc0, cc1 = int(col_start[0]), int(col_start[-1]) + ww
            c_rows, c_cols = torch.arange(cr0, cr1, device=dev), torch.arange(cc0, cc1, device=dev)
            # valid[q, m]: candidate m lies in query q's window and is not q itself.
            in_rows = (c_rows[None] >= row_start[:, None]) & (c_rows[None] < row_start[:, None] + wh)
            in_cols = (c_cols[None] >= col_start[:, None]) & (c_cols[None] < col_start[:, None] + ww)
            valid = (in_rows[:, None, :, None] & in_cols[None, :, None, :])
            is_self = (q_rows[:, None, None, None] == c_rows[None, None, :, None]) & \
                      (q_cols[None, :, None, None] == c_cols[None, None, None, :])
            valid = (valid & ~is_self).reshape(1, (r1 - r0) * (c1 - c0), -1)
            queries = self._patches(ep, (r0, r1), (c0, c1))
            cands = self._patches(ep, (cr0, cr1), (cc0, cc1))
            values = self._patches(xp, (cr0, cr1), (cc0, cc1))
            t = t_grid[:, r0:r1, c0:c1].reshape(b, -1, 1)
            weights = neighbour_weights(queries, cands, t, k, valid, self.bn, self.method, self.update)
            has_any = valid.any(-1)  # (1, Q): a query without candidates keeps itself as neighbour
            own = None if bool(has_any.all()) else self._patches(xp, (r0, r1), (c0, c1)).transpose(1, 2)
            size = (s * (r1 - r0 - 1) + p, s * (c1 - c0 - 1) + p)
            values_t = values.transpose(1, 2)  # (B, C·p², M)
            for j, w_j in enumerate(weights.unbind(2)):
                # Eq. 11 as (C·p², M) @ (M, Q): the columns F.fold takes, without a transposing copy.
                cols = values_t @ w_j.transpose(1, 2)
                if own is not None:
                    cols = torch.where(has_any[:, None, :], cols, own)
                # Fold the tile's j-th neighbour volume back to pixels (sum; averaged below).
                acc[:, j * c:(j + 1) * c, s * r0: s * r0 + size[0], s * c0: s * c0 + size[1]] += \
                    F.fold(cols, size, p, stride=s)
            if progress is not None:
                progress(i + 1, len(tiles))
        count = F.fold(xp.new_ones(1, p * p, nh * nw), (hp, wp), p, stride=s)
        volumes = (acc / count)[:, :, top: top + h, left: left + w]
        diffs = volumes.view(b, k, c, h, w) - x.unsqueeze(1)
        return torch.cat([x, diffs.reshape(b, k * c, h, w)], dim=1)

    def _tile_layout(self, rows: tuple[int, int], cols: tuple[int, int], wh: int, ww: int, nh: int, nw: int,
                     device: torch.device) -> tuple[tuple[int, int], tuple[int, int], Tensor | None, Tensor, Tensor]:
        """Candidate region of a tile of queries and where each query's window lies in it.

        Returns the region's grid rows and cols [r0, r1) × [c0, c1), the index (Q, wh·ww) of every query's
        window (row-major) into the row-major region (None where every window is the whole region), and
        the mask (1, Q, wh·ww) of valid candidates (all but the query itself), and where the weights go in
        the tile's block spread matrix (:func:`_spread_index`).
        """
        half = self.window // 2
        starts_r = [min(max(i - half, 0), nh - wh) for i in range(*rows)]
        starts_c = [min(max(j - half, 0), nw - ww) for j in range(*cols)]
        region_r, region_c = (starts_r[0], starts_r[-1] + wh), (starts_c[0], starts_c[-1] + ww)
        # Only the windows' places relative to the region matter: interior tiles all share one layout.
        own_r = tuple(i - v for i, v in zip(range(*rows), starts_r, strict=True))
        own_c = tuple(j - v for j, v in zip(range(*cols), starts_c, strict=True))
        rel_r, rel_c = tuple(v - region_r[0] for v in starts_r), tuple(v - region_c[0] for v in starts_c)
        index, valid = _window_layout(rel_r, own_r, rel_c, own_c, wh, ww, str(device))
        spread = _spread_index(rel_r, rel_c, wh, ww, self.k, self.patch // self.stride, str(device))
        return region_r, region_c, index, valid, spread

    def _forward_blocks(self, x: Tensor, e: Tensor, log_t: Tensor,
                        progress: Callable[[int, int], None] | None) -> Tensor:
        """The aggregation on exact windows and at block granularity (same result as the reference).

        Each query's candidates are laid out as exactly its wh × ww window (the query itself masked), so
        that the selection costs wh·ww per query instead of the tile's whole candidate region. Since the
        stride divides the patch size, every patch is nb × nb blocks of stride × stride pixels: the weights
        of the (up to nb²) query patches that cover a destination block are summed per source block
        before touching pixel values, so Eq. 11 and the folding become one matrix product per tile,
        (dest blocks · k, source blocks) @ (source blocks, C·stride²), and the averaging over overlapping
        patches a per-block count.
        """
        b, c, h, w = x.shape
        p, s, k = self.patch, self.stride, self.k
        nb = p // s
        # A channels-last input (the local blocks' layout) stays so: the block rows below are copies in either case,
        # and the output keeps the layout the next convolution reads.
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        if not channels_last:
            x = x.contiguous()
        xp, ep, t_grid, (top, bottom, left, right) = self._padded(x, e, log_t)
        hp, wp = h + top + bottom, w + left + right
        nh, nw = t_grid.shape[-2:]
        bh, bw = hp // s, wp // s  # blocks: nh + nb - 1, nw + nb - 1
        wh, ww = min(self.window, nh), min(self.window, nw)
        # (B, bh, bw, C·s²): the value blocks, one row per block
        xb = xp.reshape(b, c, bh, s, bw, s).permute(0, 2, 4, 1, 3, 5).reshape(b, bh, bw, c * s * s)
        eb = ep.reshape(b, -1, bh, s, bw, s).permute(0, 2, 4, 1, 3, 5).reshape(b, bh, bw, -1)
        # In training, one tile spans the whole grid: batch statistics of the distance norm then
        # cover every distance, as in a whole-image forward pass.
        qt = max(nh, nw) if self.training else self.query_tile
        bands = list(range(0, nh, qt))
        acc: Tensor | None = None
        single = qt >= nh and qt >= nw
        for i, r0 in enumerate(bands):
            # A band of query tiles. Tiles with the same window layout (all the interior ones) are stacked
            # along the batch dimension and the selection runs on the whole band at once: fewer, larger ops.
            rows = (r0, min(r0 + qt, nh))
            tr = rows[1] - rows[0]
            groups: dict[tuple[int, int, int, int], list[Any]] = {}
            for c0 in range(0, nw, qt):
                cols = (c0, min(c0 + qt, nw))
                region_r, region_c, index, valid, spread_index = self._tile_layout(rows, cols, wh, ww, nh, nw,
                                                                                   x.device)
                key = (cols[1] - cols[0], region_c[1] - region_c[0], id(valid), id(spread_index))
                groups.setdefault(key, [region_r, index, valid, spread_index, []])[4].append((cols, region_c))
            alphas, valids, temps = [], [], []
            for (tc, _rw, *_), (region_r, index, valid, _si, tiles) in groups.items():
                n = len(tiles)
                eq = _stack([eb[:, rows[0]: rows[1] + nb - 1, c[0]: c[1] + nb - 1] for c, _ in tiles])
                er = _stack([eb[:, region_r[0]: region_r[1] + nb - 1, rc[0]: rc[1] + nb - 1] for _, rc in tiles])
                dist = _block_distances(eq, er, nb)  # (B·n, Q, R)
                if index is not None:
                    dist = dist.gather(2, index.expand(b * n, -1, -1))  # (B·n, Q, wh·ww)
                alphas.append(dist.reshape(b, n * tr * tc, wh * ww))
                valids.append(valid if n == 1 else valid.repeat(1, n, 1))
                temps.append(_stack([t_grid[:, rows[0]:rows[1], c[0]:c[1]] for c, _ in tiles]).reshape(b, -1, 1))
            dist = alphas[0] if len(alphas) == 1 else torch.cat(alphas, 1)
            valid = valids[0] if len(valids) == 1 else torch.cat(valids, 1)
            alpha = self._logits(dist, valid)
            t = temps[0] if len(temps) == 1 else torch.cat(temps, 1)
            band_weights = select(alpha, t, k, self.method, update=self.update)  # (B, Q, k, wh·ww)
            if wh * ww == 1:  # a query without candidates keeps itself as neighbour
                band_weights = torch.where(valid.any(-1)[..., None, None], band_weights,
                                           torch.ones_like(band_weights))
            start = 0
            for (tc, rw, *_), (region_r, window_index, _, spread_index, group) in groups.items():
                q, rh = tr * tc, region_r[1] - region_r[0]
                # A few tiles at a time (see _SPREAD_TILES): their spread matrices (~1 MB per tile) stay in cache.
                for j0 in range(0, len(group), _SPREAD_TILES):
                    tiles = group[j0: j0 + _SPREAD_TILES]
                    n = len(tiles)
                    weights = band_weights[:, start: start + n * q].reshape(b * n, q * k * wh * ww)
                    start += n * q
                    # Spread to blocks: sub-block (u, v) of query patch (i, j) is destination block
                    # (i + u, j + v), and the same sub-block of candidate (a, b) is source block (a + u, b + v).
                    src = _stack([xb[:, region_r[0]: region_r[1] + nb - 1, rc[0]: rc[1] + nb - 1] for _, rc in tiles])
                    if not weights.requires_grad and rh == tr + wh - 1 and rw == tc + ww - 1:
                        out = _aggregate_translated(weights.view(b * n, tr, tc, k, wh, ww), src.contiguous(), nb)
                    else:
                        if window_index is None:  # every window is the whole region (the tile of training)
                            spread = _SpreadWhole.apply(weights, (tr, tc, k, wh, ww, nb))
                        else:
                            size = (tr + nb - 1) * (tc + nb - 1) * k * (rh + nb - 1) * (rw + nb - 1)
                            spread = _Spread.apply(weights, spread_index, size)
                        out = spread.view(b * n, -1, (rh + nb - 1) * (rw + nb - 1)) @ src.reshape(b * n, -1, c * s * s)
                    out = out.view(b, n, tr + nb - 1, tc + nb - 1, k, c * s * s)  # Eq. 11, per destination block
                    if single:
                        acc = out.squeeze(1)  # a view both ways (indexing would zero-fill a copy in backward)
                        continue
                    if acc is None:
                        acc = out.new_zeros(b, bh, bw, k, c * s * s)
                    for j, (cols, _) in enumerate(tiles):
                        acc[:, rows[0]: rows[1] + nb - 1, cols[0]: cols[1] + nb - 1] += out[:, j]
            if progress is not None:
                progress(i + 1, len(bands))
        assert acc is not None
        return self._blocks_to_pixels(acc, x, (nh, nw), (top, left), channels_last)

    def _logits(self, dist: Tensor, valid: Tensor) -> Tensor:
        """α = -D (Eq. 4), through the distance norm when there is one; excluded candidates at -inf."""
        if self.bn is not None and not self.bn.batch_statistics:  # the running-stats norm, in one pass
            scale, shift = self.bn.eval_affine()
            alpha = torch.addcmul(shift, dist, scale, value=-1.0)
        elif self.bn is not None:
            alpha = self.bn(-dist, valid)  # normalised over the valid distances
        else:
            alpha = -dist
        return alpha.masked_fill(~valid, _NEG_INF)

    def _blocks_to_pixels(self, acc: Tensor, x: Tensor, grid: tuple[int, int], offset: tuple[int, int],
                          channels_last: bool = False) -> Tensor:
        """The neighbour volumes summed per block, (B, bh, bw, k, C·s²), averaged over the patches covering each
        block and cropped back to pixels: concat(x, N_1 - x, ..., N_k - x), in channels-last memory where the
        block input came so (the layout the next convolution reads)."""
        b, c, h, w = x.shape
        s, k, nb = self.stride, self.k, self.patch // self.stride
        (nh, nw), (top, left) = grid, offset
        bh, bw = acc.shape[1], acc.shape[2]
        # Patches covering each block: nb per dimension inside, fewer at the grid's edges.
        cover_r = [min(u, nh - 1) - max(u - nb + 1, 0) + 1 for u in range(bh)]
        cover_c = [min(v, nw - 1) - max(v - nb + 1, 0) + 1 for v in range(bw)]
        inv_count = 1.0 / (torch.tensor(cover_r, dtype=x.dtype, device=x.device)[:, None]
                           * torch.tensor(cover_c, dtype=x.dtype, device=x.device)[None, :])
        return _BlocksToPixels.apply(acc.view(b, bh, bw, k, c, s, s), x, inv_count, (top, left), channels_last)


class _BlocksToPixels(torch.autograd.Function):
    """concat(x, N_1 - x, ..., N_k - x) from the neighbour volumes summed per block, acc (B, bh, bw, k, C, s, s), and
    the inverse count of patches covering each block (bh, bw), cropped at offset (top, left) to x's (B, C, H, W).

    Two passes over the output each way (averaging into pixel order, differences into place; backward: the
    differences' gradient summed for x, then averaged back into the block layout); autograd's version of the same
    expressions took five, through permuted copies (docs/speed.md)."""

    @staticmethod
    def forward(ctx: Any, acc: Tensor, x: Tensor, inv_count: Tensor, offset: tuple[int, int],
                channels_last: bool = False) -> Tensor:
        ctx.save_for_backward(inv_count)
        ctx.shape, ctx.offset = acc.shape, offset
        ctx.native = channels_last and _native_float32(acc) and _native_float32(x)
        if ctx.native:  # both passes in one (n3_blocks_to_pixels_forward)
            return native.blocks_to_pixels(acc.contiguous(), x, inv_count.contiguous(), offset)
        b, bh, bw, k, c, s, _ = acc.shape
        h, w = x.shape[-2:]
        top, left = offset
        blocks = acc.permute(0, 3, 4, 1, 5, 2, 6)  # (B, k, C, bh, s, bw, s)
        volumes = torch.mul(blocks, inv_count.view(1, 1, 1, bh, 1, bw, 1),
                            out=acc.new_empty(b, k, c, bh, s, bw, s)).view(b, k, c, bh * s, bw * s)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        result = torch.empty(b, (k + 1) * c, h, w, dtype=x.dtype, device=x.device, memory_format=layout)
        result[:, :c] = x
        torch.sub(volumes[..., top: top + h, left: left + w], x.unsqueeze(1), out=result[:, c:].view(b, k, c, h, w))
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:  # type: ignore[override]
        (inv_count,) = ctx.saved_tensors
        if ctx.native and _native_float32(grad):  # n3_blocks_to_pixels_backward
            grad_acc, grad_x = native.blocks_to_pixels_backward(grad, inv_count.contiguous(), tuple(ctx.shape),
                                                                ctx.offset)
            return (grad_acc if ctx.needs_input_grad[0] else None, grad_x if ctx.needs_input_grad[1] else None,
                    None, None, None)
        b, bh, bw, k, c, s, _ = ctx.shape
        top, left = ctx.offset
        h, w = grad.shape[-2:]
        g_diffs = grad[:, c:].reshape(b, k, c, h, w)  # a view for NCHW and channels-last gradients
        grad_x = grad[:, :c] - g_diffs.sum(1) if ctx.needs_input_grad[1] else None
        grad_acc = None
        if ctx.needs_input_grad[0]:
            if (top, left, h, w) == (0, 0, bh * s, bw * s):
                g_vol = g_diffs
            else:  # the padding got no gradient
                g_vol = grad.new_zeros(b, k, c, bh * s, bw * s)
                g_vol[..., top: top + h, left: left + w] = g_diffs
            grad_acc = grad.new_empty(b, bh, bw, k, c, s, s)
            torch.mul(g_vol.view(b, k, c, bh, s, bw, s), inv_count.view(1, 1, 1, bh, 1, bw, 1),
                      out=grad_acc.permute(0, 3, 4, 1, 5, 2, 6))
        return grad_acc, grad_x, None, None, None


def set_bf16_cnns_in_training(model: nn.Module, enabled: bool) -> None:
    """Set :attr:`N3Block2d.bf16_cnns_in_training` on every N3 block of ``model``."""
    for block in model.modules():
        if isinstance(block, N3Block2d):
            block.bf16_cnns_in_training = enabled


def conv_bn_relu_stack(in_channels: int, features: int, out_channels: int, depth: int = 3) -> nn.Sequential:
    """Tables 7/8: (depth-1) × [3×3 conv (no bias), BN, ReLU] then a 3×3 conv with bias."""
    layers: list[nn.Module] = []
    ch = in_channels
    for _ in range(depth - 1):
        layers += [nn.Conv2d(ch, features, 3, padding=1, bias=False), nn.BatchNorm2d(features), nn.ReLU(True)]
        ch = features
    layers.append(nn.Conv2d(ch, out_channels, 3, padding=1))
    return nn.Sequential(*layers)


class N3Block2d(nn.Module):
    """The image N3 block (Fig. 2a): embedding CNN f_E, temperature CNN f_T, aggregation.

    ``embedding="cnn"`` learns the matching space (N3); ``"input"`` matches patches of a guide
    image given to :meth:`forward` (the paper's KNN baseline, Table 1 (iii), with hard selection).
    Output channels: (k + 1) · in_channels.
    """

    def __init__(self, in_channels: int = 8, k: int = 7, embed_features: int = 64, embed_channels: int = 8,
                 patch: int = 10, stride: int = 5, window: int = 15, method: Selection = "continuous",
                 update: Update = "alpha", embedding: str = "cnn", temperature: str = "cnn",
                 distance_norm: bool = True, temperature_scale: float = 0.1) -> None:
        super().__init__()
        if embedding not in ("cnn", "input"):
            raise ValueError(f"unknown embedding {embedding!r}")
        if temperature not in ("cnn", "scalar"):
            raise ValueError(f"unknown temperature {temperature!r}")
        self.in_channels, self.k = in_channels, k
        self.embedding_kind = embedding
        if embedding == "cnn":
            self.embedcnn = conv_bn_relu_stack(in_channels, embed_features, embed_channels)
        if temperature == "cnn":
            self.tempcnn = conv_bn_relu_stack(in_channels, embed_features, 1)
        else:
            self.log_temperature = nn.Parameter(torch.zeros(()))
        self.n3aggregation = N3Aggregation2d(k, patch, stride, window, method, update, distance_norm,
                                             temperature_scale)
        #: Train f_E and f_T in bf16 under bf16 autocast (``n3 train --set precision=bf16-all``) instead of float32.
        #: Not part of the state dict.
        self.bf16_cnns_in_training = False

    @property
    def out_channels(self) -> int:
        return (self.k + 1) * self.in_channels

    def forward(self, x: Tensor, guide: Tensor | None = None) -> Tensor:
        """In inference the embedding and temperature CNNs follow the caller's precision like the other convolutions
        (bf16 measured: docs/speed.md; fp16 not, so it keeps them in float32). With autograd they run in float32 even
        under autocast unless :attr:`bf16_cnns_in_training`: in bf16 their gradients can lose their direction (cosine
        to float64 gradients on a training batch of the colour model: embedding 0.45, temperature 0.14; float32 0.94
        and 0.94; of a gray model 0.998 either way: docs/training.md, ``benchmarks/n3_cnn_precision.py``). The
        aggregation always casts to float32 itself."""
        dev = x.device.type
        half = dev in ("cpu", "cuda") and torch.is_autocast_enabled(dev) and \
            torch.get_autocast_dtype(dev) == torch.float16
        inputs = (x,) if guide is None else (x, guide)
        fp32 = half or (torch.is_grad_enabled() and not self.bf16_cnns_in_training)
        ctx, tensors = full_precision(*inputs) if fp32 else (contextlib.nullcontext(), list(inputs))
        with ctx:
            e, log_t = self._embed(tensors[0], tensors[1] if guide is not None else None)
            return self.n3aggregation(tensors[0], e, log_t)

    def _embed(self, x: Tensor, guide: Tensor | None) -> tuple[Tensor, Tensor]:
        """The embedding e (f_E, or the guide image) and the log-temperature (f_T) of the block input x."""
        if self.embedding_kind == "cnn":
            e = self.embedcnn(x)
        else:
            if guide is None:
                raise ValueError("this N3 block matches on a guide image; pass guide=")
            e = guide
        log_t = self.tempcnn(x) if hasattr(self, "tempcnn") else self.log_temperature.expand_as(x[:, :1])
        return e, log_t
