"""Properties of the nearest-neighbour selection rules (paper Sec. 3, Eqs. 3-11)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from n3cli.nn.knn import _divide, concrete_knn, continuous_knn, hard_knn, select

_NEG_INF = float("-inf")


def _dist(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("update", ["alpha", "logits"])
def test_weights_sum_to_one(update: str) -> None:
    d = _dist(3, 5, 20)
    w = continuous_knn(-d, torch.full((3, 5, 1), 0.3, dtype=torch.float64), 7, update=update)
    assert w.shape == (3, 5, 7, 20)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 5, 7, dtype=torch.float64))
    assert (w >= 0).all()


def test_zero_temperature_limit_is_hard_knn() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.stack([torch.randperm(30, generator=g) for _ in range(4)]).float() / 30  # gaps of 1/30
    order = d.argsort(dim=-1)
    for t in (1e-3, 1e-4):
        w = continuous_knn(-d, t, 7)
        assert torch.isfinite(w).all()
        picked = w.argmax(-1)
        torch.testing.assert_close(picked, order[:, :7])
        assert (w.max(-1).values > 0.99).all()
    torch.testing.assert_close(hard_knn(-d, 7).argmax(-1), order[:, :7])


def test_scaled_logits_update_ties_in_the_limit() -> None:
    """The 'logits' update (published checkpoints) does not reach hard KNN: documented behaviour."""
    d = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    w = continuous_knn(-d, 1e-4, 2, update="logits")
    torch.testing.assert_close(w[0, 1, :2], torch.tensor([0.5, 0.5]), atol=1e-3, rtol=0)


def test_k1_is_softmax_attention() -> None:
    d = _dist(6, 11)
    t = torch.rand(6, 1, dtype=torch.float64) + 0.1
    torch.testing.assert_close(continuous_knn(-d, t, 1)[:, 0], torch.softmax(-d / t, dim=-1))


def test_gradcheck_distances_and_temperature() -> None:
    d = _dist(2, 3, 8).requires_grad_()
    t = (torch.rand(2, 3, 1, dtype=torch.float64) + 0.2).requires_grad_()
    for update in ("alpha", "logits"):
        assert torch.autograd.gradcheck(lambda a, b, u=update: continuous_knn(-a, b, 4, update=u), (d, t))


def test_gradcheck_with_masked_candidates() -> None:
    d = _dist(2, 9).requires_grad_()
    t = torch.tensor([[0.5], [0.25]], dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[:, 4] = True

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return continuous_knn((-a).masked_fill(mask, float("-inf")), b, 3)

    assert torch.autograd.gradcheck(f, (d, t))
    assert (f(d, t)[..., 4] == 0).all()


@pytest.mark.parametrize("t", [1e-4, 1e-2, 1.0])
def test_no_nan_small_temperature_and_ties(t: float) -> None:
    d = torch.tensor([[0.2, 0.2, 0.2, 0.5, 0.5, 0.9]] * 2, requires_grad=True)
    tt = torch.full((2, 1), t, requires_grad=True)
    w = continuous_knn(-d, tt, 5)
    (w * torch.arange(6.0)).sum().backward()
    assert torch.isfinite(w).all() and torch.isfinite(d.grad).all() and torch.isfinite(tt.grad).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 5))


def test_gradient_bounded_as_weight_tends_to_one() -> None:
    # One candidate far closer than the rest: w¹ -> 1. log(1 - w¹) must keep a bounded gradient.
    d = torch.tensor([[0.0, 1.0, 1.0, 1.0]], dtype=torch.float64, requires_grad=True)
    w = continuous_knn(-d, 0.01, 2, update="logits")
    w[0, 1, 1].backward()
    assert torch.isfinite(d.grad).all() and d.grad.abs().max() < 1e3


def test_rows_without_candidates_get_zero_weights() -> None:
    alpha = torch.full((2, 4), float("-inf"))
    alpha[1, 2] = 0.0
    w = continuous_knn(alpha, 0.5, 3)
    assert torch.isfinite(w).all()
    assert w[0].sum() == 0
    torch.testing.assert_close(w[1, 0], torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert w[1, 1:].sum() == 0


def test_log1mexp_accuracy() -> None:
    x = torch.tensor([-1e-10, -1e-3, -0.5, -1.0, -20.0, -800.0], dtype=torch.float64)
    expected = torch.log(-torch.expm1(x))
    torch.testing.assert_close(log1mexp(x), expected)


def test_hard_knn_one_hot_and_missing_candidates() -> None:
    alpha = torch.tensor([[0.3, float("-inf"), 0.9, 0.1]])
    w = hard_knn(alpha, 4)
    torch.testing.assert_close(w[0, :3].argmax(-1), torch.tensor([2, 0, 3]))
    assert w[0, 3].sum() == 0  # the excluded candidate is never selected
    assert w.sum(-1)[0, :3].eq(1).all()


def test_concrete_is_stochastic_and_normalised() -> None:
    d = _dist(3, 12, dtype=torch.float32)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    w1 = concrete_knn(-d, 0.1, 4, tau=0.5, generator=g1)
    w2 = concrete_knn(-d, 0.1, 4, tau=0.5, generator=g2)
    torch.testing.assert_close(w1.sum(-1), torch.ones(3, 4))
    assert not torch.allclose(w1, w2)


def test_select_dispatch_and_errors() -> None:
    d = _dist(2, 6)
    torch.testing.assert_close(select(-d, 0.2, 3, "continuous"), continuous_knn(-d, 0.2, 3))
    torch.testing.assert_close(select(-d, 0.2, 3, "hard"), hard_knn(-d, 3))
    with pytest.raises(ValueError):
        select(-d, 0.2, 3, "nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        continuous_knn(-d, 0.2, 0)


# The log-domain transcription of Eqs. 8-10 that the package's one-exponential step is tested against.


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate over the whole range (Mächler 2012)."""
    x = x.clamp_max(0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log1m_softmax(logits: Tensor, log_w: Tensor) -> Tensor:
    """log(1 - w) for w = softmax(logits), stable and with bounded gradients as w -> 1.

    Only the largest weight of a row can approach 1. For it, 1 - w is the softmax mass of all the
    other candidates, so log(1 - w) = logsumexp(others) - logsumexp(all): exact, finite (unless the
    row has a single valid candidate) and with softmax-bounded gradients. Every other weight is at
    most 1/2, where log1p(-w) is well conditioned.
    """
    top = logits.argmax(dim=-1, keepdim=True)
    is_top = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, top, True)
    others = logits.masked_fill(is_top, _NEG_INF)
    has_others = torch.isfinite(others).any(dim=-1, keepdim=True)
    # Keep both logsumexps finite so that no NaN reaches the gradient through torch.where.
    lse_all = torch.logsumexp(logits.masked_fill(~has_others, 0.0), dim=-1, keepdim=True)
    lse_others = torch.logsumexp(others.masked_fill(~has_others, 0.0), dim=-1, keepdim=True)
    log_rest_top = torch.where(has_others, lse_others - lse_all, _NEG_INF)
    # Never let a masked (-inf) logit produce NaN: its weight is 0, so log(1 - 0) = 0.
    log_rest = log1mexp(log_w.masked_fill(is_top, -1.0))
    return torch.where(is_top, log_rest_top.expand_as(logits), log_rest)


def _safe_log_softmax(logits: Tensor) -> Tensor:
    """log_softmax that returns -inf (weights 0) instead of NaN for rows without valid candidates."""
    empty = torch.isneginf(logits).all(dim=-1, keepdim=True)
    safe = logits.masked_fill(empty, 0.0)
    return torch.log_softmax(safe, dim=-1).masked_fill(empty, _NEG_INF)


def _reference_continuous_knn(alpha: torch.Tensor, temperature: torch.Tensor | float, k: int,
                              update: str = "alpha") -> torch.Tensor:
    """Eqs. 8-10 transcribed in the log domain: log_softmax, then log(1 - w) from log-sum-exps."""
    logits = _divide(alpha, temperature)
    weights = []
    for j in range(k):
        log_w = _safe_log_softmax(logits)
        weights.append(log_w.exp())
        if j + 1 < k:
            log_rest = _log1m_softmax(logits, log_w)
            logits = logits + (_divide(log_rest, temperature) if update == "alpha" else log_rest)
    return torch.stack(weights, dim=-2)


@pytest.mark.parametrize("update", ["alpha", "logits"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scale", [1e-3, 0.1, 1.0, 10.0])
def test_matches_log_domain_reference(update: str, dtype: torch.dtype, scale: float) -> None:
    """Weights and gradients equal the log-domain transcription, with masks, ties and tiny temperatures."""
    g = torch.Generator().manual_seed(int(scale * 1000) + len(update))
    d = torch.rand(3, 6, 40, generator=g, dtype=dtype)
    d[0, 0, :5] = d[0, 0, 5]  # ties at the nearest neighbour
    mask = torch.rand(3, 6, 40, generator=g) < 0.3
    mask[1, 2, 1:] = True  # a query with one candidate
    mask[1, 3] = True  # and one with none
    t = (torch.rand(3, 6, 1, generator=g, dtype=dtype) + 0.05) * scale
    alpha = (-d).masked_fill(mask, float("-inf"))
    a1, t1 = alpha.clone().requires_grad_(), t.clone().requires_grad_()
    a2, t2 = alpha.clone().requires_grad_(), t.clone().requires_grad_()
    w1 = continuous_knn(a1, t1, 7, update=update)
    w2 = _reference_continuous_knn(a2, t2, 7, update=update)
    tol = {"rtol": 1e-4, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(w1, w2, **tol)
    probe = torch.rand(w1.shape, generator=g, dtype=dtype)
    (w1 * probe).sum().backward()
    (w2 * probe).sum().backward()
    assert torch.isfinite(a1.grad).all() and torch.isfinite(t1.grad).all()
    if scale < 0.1:  # saturated: the exact gradients are of order exp(-gap / t), both sides rounding noise
        return
    grad_tol = {"rtol": 1e-3, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-7, "atol": 1e-9}
    torch.testing.assert_close(a1.grad, a2.grad, **grad_tol)
    torch.testing.assert_close(t1.grad, t2.grad, **grad_tol)


def _reference_concrete_knn(alpha: torch.Tensor, temperature: float, k: int, tau: float,
                            generator: torch.Generator) -> torch.Tensor:
    weights = []
    for j in range(k):
        u = torch.rand(alpha.shape, generator=generator, dtype=alpha.dtype)
        gumbel = -torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))
        noisy = (_divide(alpha, temperature) + gumbel) / tau
        log_w = _safe_log_softmax(noisy)
        weights.append(log_w.exp())
        if j + 1 < k:
            alpha = alpha + _log1m_softmax(noisy, log_w)
    return torch.stack(weights, dim=-2)


def test_concrete_matches_log_domain_reference() -> None:
    """Same Gumbel draws, same weights as the log-domain transcription (masks and a one-candidate row)."""
    d = _dist(4, 16)
    alpha = (-d).masked_fill(torch.rand(4, 16, generator=torch.Generator().manual_seed(3)) < 0.3, _NEG_INF)
    alpha[2, 1:] = _NEG_INF
    ours = concrete_knn(alpha, 0.1, 5, tau=0.5, generator=torch.Generator().manual_seed(7))
    ref = _reference_concrete_knn(alpha, 0.1, 5, 0.5, torch.Generator().manual_seed(7))
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("update", ["alpha", "logits"])
@pytest.mark.parametrize("case", ["plain", "scalar_t", "dominant", "empty_row", "k_exceeds"])
def test_no_grad_path_equals_autograd_path(update: str, case: str) -> None:
    """Without autograd continuous_knn runs a leaner loop (or falls back); the values must be the same."""
    g = torch.Generator().manual_seed(4)
    alpha = -5 * torch.rand(3, 20, 30, generator=g, dtype=torch.float64)
    alpha[..., 4] = float("-inf")
    t: torch.Tensor | float = 0.05 + 0.3 * torch.rand(3, 20, 1, generator=g, dtype=torch.float64)
    k = 7
    if case == "scalar_t":
        t = 0.2
    elif case == "dominant":  # the others' weights underflow: the exact fallback
        alpha[0, 0, 1] = 1e4
    elif case == "empty_row":
        alpha[1, 2] = float("-inf")
    elif case == "k_exceeds":
        alpha = alpha[..., :5]
    with torch.no_grad():
        fast = continuous_knn(alpha, t, k, update=update)
    slow = continuous_knn(alpha.clone().requires_grad_(), t, k, update=update).detach()
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-300)
