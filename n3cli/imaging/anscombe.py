"""The generalised Anscombe transform (GAT) for Poisson-Gaussian noise and its inverse.

Noise model (n3's NLF convention): ``z = a·Poisson(y/a) + N(0, b)``, i.e. variance ``a·y + b`` for the
normalised signal ``y``. The GAT (Starck, Murtagh & Bijaoui 1998) with gain ``α = a``, Gaussian variance
``σ² = b`` and zero mean,

    f(z) = (2/a)·sqrt(max(a·z + 3/8·a² + b, 0)),

makes the noise approximately N(0, 1). Its inverse is the closed-form approximation of the exact unbiased
inverse of Mäkitalo & Foi (2013, "Optimal inversion of the generalized Anscombe transformation for
Poisson-Gaussian noise", IEEE TIP 22(1)): with ``σ̃ = sqrt(b)/a`` (the Gaussian std in Poisson units),

    I(D) = D²/4 + (1/4)·sqrt(3/2)·D⁻¹ - (11/8)·D⁻² + (5/8)·sqrt(3/2)·D⁻³ - 1/8 - σ̃²,
    y = a·max(I(D), 0).

The rational terms make the formula non-monotone for D below ≈ 0.838 (its minimum); there D is raised to that
point, which only affects values that map to 0 anyway (I < 0 there).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["gat", "gat_inverse"]

_C = math.sqrt(1.5)


def _d_min() -> float:
    """The minimum of the closed-form Poisson inverse: the positive real root of D⁴·I'(D)."""
    roots = np.roots([0.5, 0.0, 0.0, -_C / 4, 11 / 4, -3 * 5 / 8 * _C])
    real = [r.real for r in roots if abs(r.imag) < 1e-9 and r.real > 0]
    return float(max(real))


D_MIN = _d_min()


def _check(a: float, b: float) -> tuple[float, float]:
    a, b = float(a), float(b)
    if not (math.isfinite(a) and math.isfinite(b)) or a <= 0 or b < 0:
        raise ValueError(f"the GAT needs a > 0 and b >= 0, got a={a:g}, b={b:g}")
    return a, b


def gat(z: np.ndarray, a: float, b: float) -> np.ndarray:
    """Forward GAT of noisy data ``z`` with NLF ``σ²(y) = a·y + b``; the result has noise std ≈ 1."""
    a, b = _check(a, b)
    z = np.asarray(z, dtype=np.float64)
    return (2.0 / a) * np.sqrt(np.maximum(a * z + 0.375 * a * a + b, 0.0))


def gat_inverse(d: np.ndarray, a: float, b: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`gat` (Mäkitalo & Foi 2013)."""
    a, b = _check(a, b)
    d = np.maximum(np.asarray(d, dtype=np.float64), D_MIN)
    s2 = b / (a * a)
    inv = (0.25 * d * d + 0.25 * _C / d - 1.375 / (d * d) + 0.625 * _C / d**3 - 0.125 - s2)
    return a * np.maximum(inv, 0.0)
