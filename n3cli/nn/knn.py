"""Nearest-neighbour selection as weights over candidates (paper Sec. 3).

Every function here maps logits α = -distance of shape (..., M) — one row of M candidates per
query — and a temperature t to k weight vectors of shape (..., k, M). A neighbour is then the
weighted sum of candidates (Eqs. 7 and 11), which :mod:`n3cli.nn.n3` computes as a matrix product.

* :func:`continuous_knn` — the paper's continuous deterministic relaxation (Eqs. 8-10).
* :func:`hard_knn` — the classic KNN rule as one-hot weights (the "KNN block" baseline).
* :func:`concrete_knn` — the stochastic Concrete / Gumbel-softmax relaxation (Table 1, row v).

Candidates are excluded by giving them α = -inf. A row without any valid candidate yields
all-zero weight vectors (callers then fall back to the query itself).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native

Selection = Literal["continuous", "hard", "concrete"]
Update = Literal["alpha", "logits"]

_NEG_INF = float("-inf")
#: Run :func:`continuous_knn` on float32 CPU tensors through the C selection (:mod:`n3cli.nn.native`, forward and
#: backward) where it could be built; False runs the PyTorch code (the reference the tests compare against).
NATIVE = True


def _divide(x: Tensor, t: Tensor | float) -> Tensor:
    """x / t keeping -inf entries at -inf without NaN gradients with respect to t."""
    masked = torch.isneginf(x)
    return (x.masked_fill(masked, 0.0) / t).masked_fill(masked, _NEG_INF)


def _softmax_and_log1m(logits: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
    """w = softmax(logits) and log(1 - w) with one exponential per candidate (Eqs. 8-10, one step).

    Rows whose logits are all -inf get w = 0. Only the largest weight of a row can approach 1: for it
    1 - w is the (exactly summed) weight of all the other candidates; every other weight is at most 1/2,
    where log1p(-w) is well conditioned. Where the others' weights underflow
    (logit gaps beyond ~70 in float32), their log-sum-exp is taken instead, so log(1 - w) stays exact.
    Returns (w, log(1 - w), has_others): has_others marks the rows with at least two candidates (None:
    all rows); log(1 - w) of the top candidate is 0 in rows without others.
    """
    top_value, top = logits.max(dim=-1, keepdim=True)
    empty = torch.isneginf(top_value)
    shifted = logits - top_value.detach().masked_fill(empty, 0.0)  # softmax is shift invariant
    p = shifted.exp()  # the top candidate: exp(0) = 1; excluded ones: 0
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
    others = p.masked_fill(is_top, 0.0).sum(-1, keepdim=True)
    total = (others + p.gather(-1, top)).masked_fill(empty, 1.0)  # others + 1, with the top's gradient
    w = p / total
    tiny = torch.finfo(logits.dtype).tiny ** 0.8  # below this the sum of the others has lost precision
    underflow = others < tiny
    has_others: Tensor | None = None
    log_others = torch.log(others.clamp_min(tiny))
    if bool(underflow.any()):  # rare: a dominant top candidate, or rows with fewer than two candidates
        rest = shifted.masked_fill(is_top, _NEG_INF)
        has_others = torch.isfinite(rest).any(dim=-1, keepdim=True)
        exact_rows = underflow & has_others
        exact = torch.logsumexp(rest.masked_fill(~exact_rows, 0.0), dim=-1, keepdim=True)
        log_others = torch.where(exact_rows, exact, log_others)
    log_rest_top = log_others - torch.log(total)
    if has_others is not None:
        log_rest_top = log_rest_top.masked_fill(~has_others, 0.0)
    log_rest = torch.log1p(-w.masked_fill(is_top, 0.0)).scatter(-1, top, log_rest_top)
    return w, log_rest, has_others


def continuous_knn(alpha: Tensor, temperature: Tensor | float, k: int, *,
                   update: Update = "alpha") -> Tensor:
    """Continuous nearest neighbours: k weight vectors (..., k, M) from logits α (..., M).

    ``alpha`` holds α¹ = -d(q, x_i) per candidate (Eq. 4, -inf excludes a candidate) and
    ``temperature`` is t (a float or a tensor broadcastable to (..., 1), e.g. one per query).
    Eq. 8: w¹ = softmax(α¹/t); Eq. 9: α^{j+1} = α^j + log(1 - w^j); Eq. 10: w^{j+1} = softmax(α^{j+1}/t).

    ``update="alpha"`` applies Eq. 9 to α as written in the paper, so that as t -> 0 the j-th weight
    vector tends to the one-hot selection of the j-th nearest candidate. ``update="logits"`` adds
    log(1 - w) to the already scaled logits α/t instead (the form that some published checkpoints
    were trained with; it does not reach hard KNN: in the limit the j-th step ties the j-th and
    (j-1)-th neighbours). With k = 1 both are plain softmax attention.

    Each step costs one exponential and one log1p per candidate (:func:`_softmax_and_log1m`); the
    log-domain transcription of the equations, which costs about three times as much, is the
    reference the tests compare against.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if update not in ("alpha", "logits"):
        raise ValueError(f"unknown update {update!r}; expected 'alpha' or 'logits'")
    if _can_run_native(alpha, temperature, k):
        *lead, m = alpha.shape
        rows = alpha.reshape(-1, m).contiguous()
        if isinstance(temperature, Tensor):
            t = temperature.expand(*lead, 1).reshape(-1).contiguous()
        else:
            t = torch.full((rows.shape[0],), float(temperature), dtype=torch.float32)
        return _NativeContinuousKnn.apply(rows, t, k, update == "alpha").view(*lead, k, m)
    if not (torch.is_grad_enabled() and (alpha.requires_grad or isinstance(temperature, Tensor)
                                         and temperature.requires_grad)):
        fast = _continuous_knn_no_grad(alpha, temperature, k, update)
        if fast is not None:
            return fast
    logits = _divide(alpha, temperature)
    weights = []
    for j in range(k):
        w, log_rest, has_others = _softmax_and_log1m(logits)
        weights.append(w)
        if j + 1 < k:
            logits = logits + (log_rest / temperature if update == "alpha" else log_rest)  # Eq. 9
            if has_others is not None:  # a row whose only candidate was just taken has none left
                logits = logits.masked_fill(~has_others, _NEG_INF)
    return torch.stack(weights, dim=-2)


def _can_run_native(alpha: Tensor, temperature: Tensor | float, k: int) -> bool:
    """The C selection serves float32 CPU logits with a float or a float32 CPU temperature per row (or broadcast)."""
    if not NATIVE or alpha.device.type != "cpu" or alpha.dtype != torch.float32 or alpha.dim() < 1 or k > 64:
        return False
    if alpha.shape[-1] == 0 or alpha.numel() == 0:
        return False
    if isinstance(temperature, Tensor):
        if temperature.device.type != "cpu" or temperature.dtype != torch.float32:
            return False
        lead = (*alpha.shape[:-1], 1)
        try:
            if torch.broadcast_shapes(temperature.shape, lead) != lead:
                return False
        except RuntimeError:
            return False
    return native.available()


class _NativeContinuousKnn(torch.autograd.Function):
    """:func:`continuous_knn` of rows (rows, m) at temperatures (rows,) in C, with the backward written out
    (``aggregate.c``: n3_knn_forward / n3_knn_backward); in training it replaces about 50 autograd nodes per step
    of Eqs. 8-10."""

    @staticmethod
    def forward(ctx: Any, alpha: Tensor, temperature: Tensor, k: int, update_alpha: bool) -> Tensor:
        w, top, aux = native.knn_forward(alpha, temperature, k, update_alpha)
        ctx.save_for_backward(w, top, aux, alpha, temperature)
        ctx.update_alpha = update_alpha
        return w

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:  # type: ignore[override]
        w, top, aux, alpha, temperature = ctx.saved_tensors
        grad_alpha, grad_t = native.knn_backward(grad.float().contiguous(), w, top, aux, alpha, temperature,
                                                 ctx.update_alpha)
        return (grad_alpha if ctx.needs_input_grad[0] else None,
                grad_t if ctx.needs_input_grad[1] else None, None, None)


def _continuous_knn_no_grad(alpha: Tensor, temperature: Tensor | float, k: int, update: Update) -> Tensor | None:
    """:func:`continuous_knn` without autograd, in about half the passes over the logits.

    The same arithmetic as :func:`_softmax_and_log1m` step by step (so the same values up to the order of
    a few roundings), written in place into the output: the top candidate's p = exp(0) = 1 is zeroed
    before summing the others (instead of a mask), its weight 1 / total and log(1 - w) = log(others / total)
    are put back afterwards, and the update is one fused division and addition. Returns None (the caller
    then runs the general code) when some row has no candidate left or the others' sum underflows.
    """
    *lead, m = alpha.shape
    out = alpha.new_empty(*lead, k, m)
    logits = _divide(alpha, temperature)
    tiny = torch.finfo(alpha.dtype).tiny ** 0.8
    t = temperature if isinstance(temperature, Tensor) else torch.tensor(temperature, dtype=alpha.dtype,
                                                                        device=alpha.device)
    for j in range(k):
        top_value, top = logits.max(dim=-1, keepdim=True)
        if bool(torch.isneginf(top_value).any()):
            return None
        w = out.select(-2, j)
        torch.sub(logits, top_value, out=w)
        w.exp_().scatter_(-1, top, 0.0)  # p of the others
        others = w.sum(-1, keepdim=True)
        if bool((others < tiny).any()):
            return None
        total = others + 1.0
        w.div_(total)
        if j + 1 < k:
            log_rest = torch.log1p(w.neg())
            log_rest.scatter_(-1, top, torch.log(others) - torch.log(total))
            if update == "alpha":
                logits.addcdiv_(log_rest, t)
            else:
                logits.add_(log_rest)
        w.scatter_(-1, top, total.reciprocal())
    return out


def hard_knn(alpha: Tensor, k: int) -> Tensor:
    """The KNN rule (Eq. 2) as one-hot weights (..., k, M): the j-th row picks the j-th largest logit.

    Not differentiable with respect to the logits (zero gradient); ties go to the lower index. Rows
    with fewer than k valid (finite) candidates get all-zero rows for the missing neighbours.
    """
    m = alpha.shape[-1]
    kk = min(k, m)
    values, index = alpha.topk(kk, dim=-1)
    one_hot = torch.zeros(*alpha.shape[:-1], k, m, dtype=alpha.dtype, device=alpha.device)
    valid = torch.isfinite(values).to(alpha.dtype).unsqueeze(-1)
    src = valid.expand(*values.shape, 1)
    one_hot[..., :kk, :].scatter_(-1, index.unsqueeze(-1), src)
    return one_hot


def concrete_knn(alpha: Tensor, temperature: Tensor | float, k: int, tau: float | Tensor = 1.0,
                 generator: torch.Generator | None = None) -> Tensor:
    """Stochastic neighbours (Eqs. 3-6) relaxed with the Concrete distribution (Table 1, row v).

    Each step draws a Gumbel-softmax sample of Cat(α^j/t) with annealing parameter ``tau`` and,
    as in Eq. 5, lowers α of what was (softly) selected by log(1 - w^j).
    """
    weights = []
    for j in range(k):
        u = torch.rand(alpha.shape, generator=generator, dtype=alpha.dtype, device=alpha.device)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        noisy = (_divide(alpha, temperature) + gumbel) / tau
        w, log_rest, has_others = _softmax_and_log1m(noisy)
        weights.append(w)
        if j + 1 < k:
            alpha = alpha + log_rest  # Eq. 5
            if has_others is not None:  # a row whose only candidate was just taken has none left
                alpha = alpha.masked_fill(~has_others, _NEG_INF)
    return torch.stack(weights, dim=-2)


def select(alpha: Tensor, temperature: Tensor | float, k: int, method: Selection = "continuous", *,
           update: Update = "alpha", tau: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Dispatch to one of the selection rules by name; returns (..., k, M) weights."""
    if method == "continuous":
        return continuous_knn(alpha, temperature, k, update=update)
    if method == "hard":
        return hard_knn(alpha, k)
    if method == "concrete":
        return concrete_knn(alpha, temperature, k, tau, generator)
    raise ValueError(f"unknown neighbour selection {method!r}; expected continuous, hard or concrete")
