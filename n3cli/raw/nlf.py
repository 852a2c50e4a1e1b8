"""Noise level function (NLF) of a raw: read from a DNG, or estimated from a single noisy mosaic.

Convention (as everywhere in n3): variance ``σ²(x) = a·x + b`` with ``x`` the normalised linear raw signal,
``x = (value - black) / (white - black)``.

The estimator follows the idea of Foi et al. (2008), "Practical Poissonian-Gaussian noise modeling and
fitting for single-image raw-data": per CFA plane, a high-pass "detail" with unit noise gain and a local mean;
the least textured pixels are kept, grouped by level, a variance is measured per group, and a robust
straight-line fit gives (a, b); clipped data are modelled as a clipped normal. Details differ (see
:func:`estimate_nlf`): texture is judged on a ring of pixels disjoint from the measured ones (no selection
bias, even for Poisson noise), the fit is a lower envelope (texture only adds variance), and the group
variances are second moments with spike rejection relative to the fit (trimmed or MAD-based variances
under-estimate low-count Poisson noise badly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from n3cli.raw.io import RawError, RawImage, pack_bayer, tiff_pages

__all__ = ["NLFEstimate", "estimate_nlf", "estimate_raw_nlf", "nlf_from_dng"]

_REL_VAR = 2.0  # var(v̂)/σ⁴ times the sample count for a mean of squared second differences (measured)


# ----------------------------------------------------------------------------------------------- DNG tag


def nlf_from_dng(path: str | Path) -> tuple[float, float] | None:
    """(a, b) from a DNG's NoiseProfile tag (51041), or None when the file has none.

    The tag holds one (S, O) pair per colour plane (or a single pair for all): variance = S·x + O in
    normalised units, exactly this module's (a, b). With several pairs their mean is returned (DNG writers
    give the planes of a Bayer sensor the same or nearly the same values). Raises :class:`RawError` for a
    missing or non-TIFF file.
    """
    p = Path(path)
    if not p.is_file():
        raise RawError(f"{p}: no such file")
    try:
        with tiff_pages(p) as pages:
            value = next((pg.tags[51041].value for pg in pages if 51041 in pg.tags), None)
    except Exception as e:  # noqa: BLE001 - tifffile raises many types for non-TIFF input
        raise RawError(f"{p}: not a TIFF/DNG file ({' '.join(str(e).split()) or type(e).__name__})") from None
    if value is None:
        return None
    vals = np.asarray(value, dtype=np.float64).ravel()
    if vals.size < 2 or vals.size % 2 or not np.all(np.isfinite(vals)):
        raise RawError(f"{p}: malformed NoiseProfile tag ({vals.size} values)")
    pairs = vals.reshape(-1, 2)
    return float(pairs[:, 0].mean()), float(pairs[:, 1].mean())


# ----------------------------------------------------------------------------------------------- estimator


@dataclass
class NLFEstimate:
    """An estimated NLF: joint (a, b); the per-plane fits (R, G1, G2, B order; NaN where a plane had too
    little usable data); the number of level groups used in the joint fit, and those groups (levels and
    noise variances, after the clipping correction) for plots."""

    a: float
    b: float
    per_plane: tuple[tuple[float, float], ...] = ()
    n_points: int = 0
    levels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    variances: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def sigma(self, x: float = 0.5) -> float:
        """σ(x) = sqrt(a·x + b)."""
        return math.sqrt(max(self.a * x + self.b, 0.0))


@dataclass
class _Samples:
    """Per-pixel measurements of one or more planes (flattened, subsampled).

    Supports: the detail and the level use the 3x3 window of the pixel; the grouping level and the texture
    measure use only the ring of pixels at distance 2 and 3. Selecting and grouping by the ring is therefore
    independent of the measured noise for any pixel-independent noise (Poisson included): no selection bias
    and no regression dilution, however strong the noise.
    """

    detail: np.ndarray  # separable second difference [1,-2,1]⊗[1,-2,1]/6: unit noise gain, kills planes
    level: np.ndarray  # 3x3 mean: the signal level of the detail's pixels
    group: np.ndarray  # mean of the ring: used to group pixels by level
    texture: np.ndarray  # variance of the ring around its best-fitting plane
    clipped: np.ndarray  # share of clipped pixels in the 7x7 window

    @staticmethod
    def concat(parts: list[_Samples]) -> _Samples:
        return _Samples(*(np.concatenate([getattr(p, f) for p in parts])
                          for f in ("detail", "level", "group", "texture", "clipped")))


def _plane_samples(plane: np.ndarray, bounds: tuple[float, float], stride: int) -> _Samples | None:
    """The measurements at every ``stride``-th pixel (rows and columns) of a plane, 3 pixels from its border.

    Window sums are separable: shifted row slices at the sampled rows, then shifted column slices at the
    sampled columns, so the cost scales with the number of samples, not the plane size.
    """
    x0 = np.asarray(plane, dtype=np.float64)
    h, w = x0.shape
    if h < 9 or w < 9:
        return None
    mean = float(x0.mean())
    x = x0 - mean  # small values: better precision of the sums of squares
    lo, hi = bounds
    clip = ((x0 <= lo) | (x0 >= hi)).astype(np.float32)

    def rows(v: np.ndarray, i: int) -> np.ndarray:  # the sampled rows shifted by i
        return v[3 + i:h - 3 + i:stride]

    def cols(v: np.ndarray, j: int) -> np.ndarray:  # the sampled columns shifted by j
        return v[:, 3 + j:w - 3 + j:stride]

    r = {i: rows(x, i) for i in range(-3, 4)}
    v3 = r[-1] + r[0] + r[1]
    v7 = v3 + r[-3] + r[-2] + r[2] + r[3]
    vr3 = r[1] - r[-1]
    vr7 = vr3 + 2.0 * (r[2] - r[-2]) + 3.0 * (r[3] - r[-3])
    q = {i: r[i] * r[i] for i in range(-3, 4)}
    q3 = q[-1] + q[0] + q[1]
    q7 = q3 + q[-3] + q[-2] + q[2] + q[3]
    vd = r[-1] - 2.0 * r[0] + r[1]
    vc = sum(rows(clip, i) for i in range(-3, 4))

    def box(v: np.ndarray, k: int) -> np.ndarray:
        return sum(cols(v, j) for j in range(-k, k + 1))

    def ramp(v: np.ndarray, k: int) -> np.ndarray:
        return sum(j * (cols(v, j) - cols(v, -j)) for j in range(1, k + 1))

    s3 = box(v3, 1)
    ring = box(v7, 3) - s3
    ring_q = box(q7, 3) - box(q3, 1)
    ring_x = ramp(v7, 3) - ramp(v3, 1)  # Σ dx·x over the ring
    ring_y = box(vr7, 3) - box(vr3, 1)
    n_ring, sxx = 40.0, 190.0  # 49 - 9 pixels; Σ dx² over the ring = 7·28 - 3·2
    texture = (ring_q - ring * ring / n_ring - (ring_x * ring_x + ring_y * ring_y) / sxx) / (n_ring - 3.0)
    detail = (cols(vd, -1) - 2.0 * cols(vd, 0) + cols(vd, 1)) / 6.0
    f32 = np.float32
    return _Samples(detail=detail.ravel().astype(f32), level=(s3 / 9.0 + mean).ravel().astype(f32),
                    group=(ring / n_ring + mean).ravel().astype(f32), texture=texture.ravel().astype(f32),
                    clipped=(box(vc, 3) / 49.0).ravel().astype(f32))


def _clip_bounds(planes: list[np.ndarray]) -> tuple[float, float]:
    """Detect clipping: a value shared by many pixels at the bottom/top of the range (else ±inf)."""
    lo, hi = -math.inf, math.inf
    vmin = min(float(p.min()) for p in planes)
    vmax = max(float(p.max()) for p in planes)
    n = sum(p.size for p in planes)
    thresh = max(8, int(2e-4 * n))
    if sum(int(np.count_nonzero(p == vmin)) for p in planes) >= thresh:
        lo = vmin
    if sum(int(np.count_nonzero(p == vmax)) for p in planes) >= thresh:
        hi = vmax
    return lo, hi


@dataclass
class _Groups:
    """Level groups: mean level, squared details of the chosen (least textured) pixels, clipped share."""

    level: np.ndarray
    d2: list[np.ndarray]
    count: np.ndarray
    clipped: np.ndarray

    def variance_below(self, limit: np.ndarray) -> np.ndarray:
        """Mean of the squared details up to ``limit`` per group (drops texture spikes far above noise)."""
        return np.asarray([float(d2[d2 <= lim].mean()) if np.any(d2 <= lim) else float(lim)
                           for d2, lim in zip(self.d2, limit, strict=True)])


def _groups(sm: _Samples, n_groups: int, select: float, min_chosen: int, max_width: float = 0.02) -> _Groups:
    """Group pixels by ring level (equal-count groups, split to at most ``max_width`` wide); in each, keep
    the ``select`` share with the least ring texture. Groups keeping fewer than ``min_chosen`` are dropped.
    """
    order = np.argsort(sm.group, kind="stable")
    gs = sm.group[order]
    n = gs.size
    cuts = [round(k * n / n_groups) for k in range(1, n_groups)]
    first, last = math.floor(float(gs[0]) / max_width) + 1, math.ceil(float(gs[-1]) / max_width)
    grid = np.arange(first, last) * max_width
    cuts += np.searchsorted(gs, grid).tolist()
    edges = sorted({0, n, *cuts})
    level, d2s, count, clipped = [], [], [], []
    for s, e in zip(edges[:-1], edges[1:], strict=False):
        k = int(select * (e - s))
        if k < min_chosen:
            continue
        grp = order[s:e]
        chosen = grp[np.argpartition(sm.texture[grp], k - 1)[:k]]
        d = sm.detail[chosen].astype(np.float64)
        level.append(float(sm.level[chosen].mean()))
        d2s.append(d * d)
        count.append(float(k))
        clipped.append(float(sm.clipped[chosen].mean()))
    return _Groups(np.asarray(level), d2s, np.asarray(count), np.asarray(clipped))


def _norm_cdf(t: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr

    return ndtr(t)


def _clipped_moments(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of N(0, 1) clipped to [alpha, beta] (bounds may be ±inf)."""
    pa, pb = _norm_cdf(alpha), _norm_cdf(beta)
    fin_a, fin_b = np.isfinite(alpha), np.isfinite(beta)
    a_ = np.where(fin_a, alpha, 0.0)
    b_ = np.where(fin_b, beta, 0.0)
    fa = np.exp(-0.5 * a_ * a_) / math.sqrt(2.0 * math.pi) * fin_a
    fb = np.exp(-0.5 * b_ * b_) / math.sqrt(2.0 * math.pi) * fin_b
    m1 = a_ * pa + (fa - fb) + b_ * (1.0 - pb)
    m2 = a_ * a_ * pa + (pb - pa) + a_ * fa - b_ * fb + b_ * b_ * (1.0 - pb)
    return m1, np.maximum(m2 - m1 * m1, 0.0)


def _declip(mu: np.ndarray, a: float, b: float, bounds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Levels y with E[clip(y + σ(y)·n)] = mu (bisection) and the factors Var[clip(y + σ(y)·n)] / σ²(y)."""
    lo, hi = bounds
    y_lo = np.full(mu.shape, (lo if math.isfinite(lo) else float(mu.min())) - 1.0)
    y_hi = np.full(mu.shape, (hi if math.isfinite(hi) else float(mu.max())) + 1.0)

    def moments(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = np.sqrt(np.maximum(a * y + b, 1e-20))
        m1, f = _clipped_moments((lo - y) / s, (hi - y) / s)
        return y + s * m1, f

    for _ in range(48):
        mid = 0.5 * (y_lo + y_hi)
        above = moments(mid)[0] > mu
        y_hi = np.where(above, mid, y_hi)
        y_lo = np.where(above, y_lo, mid)
    y = 0.5 * (y_lo + y_hi)
    return y, moments(y)[1]


def _fit_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares y ≈ a·x + b with a ≥ 0, b ≥ 0."""
    sw = w.sum()
    if x.size == 0 or sw <= 0:
        return math.nan, math.nan
    mx, my = (w * x).sum() / sw, (w * y).sum() / sw
    sxx = (w * (x - mx) ** 2).sum()
    a = (w * (x - mx) * (y - my)).sum() / sxx if sxx > 0 else 0.0
    b = my - a * mx
    if a < 0:
        a, b = 0.0, max(my, 0.0)
    if b < 0:
        sx2 = (w * x * x).sum()
        a, b = (max((w * x * y).sum() / sx2, 0.0) if sx2 > 0 else 0.0), 0.0
    return float(a), float(b)


def _robust_fit(lv: np.ndarray, var: np.ndarray, sd: np.ndarray, cap: float = 3.0,
                cap_below: float = 6.0, iters: int = 5
                ) -> tuple[float, float]:
    """Fit var ≈ a·level + b (a, b ≥ 0) to groups of which some are inflated by texture (never deflated).

    ``sd`` is each group's relative standard error. Texture only adds variance, so the fit is a robust lower
    envelope: every line through two groups (or through one, with a = 0 or b = 0) is scored with the
    standardised residuals r (r² below the line, min(r², cap²) above it); the best is refined by weighted
    least squares on its inliers.
    """
    n = lv.size
    if n == 0:
        return math.nan, math.nan
    i, j = np.triu_indices(n, 1)
    dl = lv[j] - lv[i]
    ok = np.abs(dl) > 1e-12
    i, j, dl = i[ok], j[ok], dl[ok]
    a_c = (var[j] - var[i]) / dl
    b_c = var[i] - a_c * lv[i]
    a_c = np.concatenate([a_c, np.zeros(n), np.where(lv > 0, var / np.maximum(lv, 1e-12), 0.0)])
    b_c = np.concatenate([b_c, var, np.zeros(n)])
    valid = (a_c >= 0) & (b_c >= 0)
    a_c, b_c = a_c[valid], b_c[valid]
    if a_c.size == 0:
        return _fit_line(lv, var, 1.0 / np.maximum(var * sd, 1e-30) ** 2)

    def cost(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pred = np.maximum(np.outer(a, lv) + b[:, None], 1e-30)
        r = (var[None, :] - pred) / (pred * sd[None, :])
        return np.minimum(r * r, np.where(r < 0, cap_below * cap_below, cap * cap)).sum(axis=1)

    costs = np.concatenate([cost(a_c[k:k + 4096], b_c[k:k + 4096]) for k in range(0, a_c.size, 4096)])
    best = int(np.argmin(costs))
    a, b, c = float(a_c[best]), float(b_c[best]), float(costs[best])
    for _ in range(iters):
        pred = np.maximum(a * lv + b, 1e-30)
        r = (var - pred) / (pred * sd)
        w = np.where((r < cap) & (r > -cap_below), 1.0, 0.0) / (pred * sd) ** 2
        if np.count_nonzero(w) < 2:
            break
        a_new, b_new = _fit_line(lv, var, w)
        c_new = float(cost(np.array([a_new]), np.array([b_new]))[0])
        if not c_new <= c:
            break
        a, b, c = a_new, b_new, c_new
    return a, b


def _fit_declipped(gr: _Groups, v: np.ndarray, sd: np.ndarray, bounds: tuple[float, float], a: float,
                   b: float, min_factor: float, rounds: int) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Iterate: move the groups to the levels y whose clipped-normal mean matches theirs, divide their
    variances by the clipping factors Var_clip/σ²(y) (groups below ``min_factor`` left out), refit."""
    lv, var = gr.level, v
    for _ in range(rounds):
        y, factor = _declip(gr.level, a, b, bounds)
        use = factor >= min_factor
        if np.count_nonzero(use) == 0:
            break
        lv, var = y[use], v[use] / factor[use]
        a_new, b_new = _robust_fit(lv, var, sd[use] / np.sqrt(factor[use]))
        if not math.isfinite(a_new):
            break
        done = abs(a_new - a) <= 1e-3 * max(a, 1e-12) and abs(b_new - b) <= 1e-3 * max(b, 1e-12)
        a, b = a_new, b_new
        if done:
            break
    return a, b, lv, var


def _fit_groups(gr: _Groups, bounds: tuple[float, float], spike: float = 4.0, min_factor: float = 0.3,
                rounds: int = 4) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Fit (a, b) to level groups, from above.

    Start from the plain second moments (biased up by texture spikes, never down: unlike trimmed or
    median-based variances they keep the rare large values of low-count Poisson noise). Then repeat: each
    group's variance becomes the mean squared detail up to ``spike``·σ of the previous fit (or two photons'
    worth, 2a, at very low counts), corrected for the truncation of a Gaussian, and the lines are refitted.
    Starting above the truth, the limits tighten towards the noise and texture spikes drop out.

    With clipping, each fit moves the groups to the level y whose clipped-normal mean matches theirs and
    divides their variance by the clipping factor Var_clip/σ²(y) (groups below ``min_factor`` left out).
    """
    if gr.level.size == 0:
        return math.nan, math.nan, np.zeros(0), np.zeros(0)
    sd = np.sqrt(_REL_VAR / np.maximum(gr.count, 1.0) + 0.02**2)  # 2% floor: model mismatch
    clipping = math.isfinite(bounds[0]) or math.isfinite(bounds[1])

    def fit(v: np.ndarray, a: float, b: float) -> tuple[float, float, np.ndarray, np.ndarray]:
        if not clipping:
            a, b = _robust_fit(gr.level, v, sd)
            return a, b, gr.level, v
        return _fit_declipped(gr, v, sd, bounds, a, b, min_factor, rounds)

    v = gr.variance_below(np.full(gr.level.size, np.inf))
    a, b = _robust_fit(gr.level, v, sd)
    if not math.isfinite(a):
        return a, b, gr.level, v
    a, b, lv, var = fit(v, a, b)
    for _ in range(rounds):
        if not math.isfinite(a):
            break
        y, factor = _declip(gr.level, a, b, bounds) if clipping else (gr.level, np.ones_like(gr.level))
        pred = np.maximum(factor * (a * y + b), 1e-30)
        limit = np.maximum(spike * spike * pred, (2.0 * a) ** 2)
        c = np.sqrt(limit / pred)  # the limit in σ units: undo the truncation of a Gaussian at ±c
        kept = 1.0 - 2.0 * c * np.exp(-0.5 * c * c) / math.sqrt(2 * math.pi) / (2.0 * _norm_cdf(c) - 1.0)
        a_new, b_new, lv_new, var_new = fit(gr.variance_below(limit) / kept, a, b)
        if not math.isfinite(a_new):
            break
        done = abs(a_new - a) <= 1e-3 * max(a, 1e-12) and abs(b_new - b) <= 1e-3 * max(b, 1e-12)
        a, b, lv, var = a_new, b_new, lv_new, var_new
        if done:
            break
    return a, b, lv, var


def estimate_nlf(mosaic: np.ndarray, pattern: str | None = "RGGB", *, n_groups: int = 32,
                 select: float = 0.1, max_samples: int = 600_000) -> NLFEstimate:
    """Estimate the NLF (a, b) of a normalised noisy Bayer mosaic (or of one plane, ``pattern=None``).

    Per CFA plane (R, G1, G2, B at half resolution) and pixel: the separable second difference
    [1,-2,1]⊗[1,-2,1]/6 (unit noise gain; the noise measurement) and the 3x3 mean (its level); the ring of
    pixels at distance 2-3 gives an independent level for grouping and a texture measure (variance about
    the best-fitting plane). The pixels of all planes are split into level groups (``n_groups`` equal-count
    groups, at most 0.02 wide) and in each the ``select`` share with the least texture is kept. A robust
    lower-envelope straight-line fit (a, b ≥ 0) of the groups' second moments is refined by rejecting
    details beyond 4σ of the current fit. Clipping (many pixels at exactly the minimum or maximum value) is
    modelled as a clipped normal. The joint fit uses the groups of all planes; ``per_plane`` has a fit per
    plane. At most ``max_samples`` pixels per plane are used (regular subsampling): about 0.6-1 s for a
    4128x2176 mosaic on one CPU core.

    Limits: texture at every level (e.g. foliage or rock over the whole image at low noise) makes ``a`` too
    high; an image without bright areas leaves ``a`` poorly determined.
    """
    m = np.asarray(mosaic)
    if m.ndim != 2:
        raise ValueError(f"expected a 2-D mosaic, got shape {m.shape}")
    planes = [m] if pattern is None else list(pack_bayer(m, pattern))
    planes = [np.asarray(p, dtype=np.float32) for p in planes]
    if not all(np.all(np.isfinite(p)) for p in planes):
        raise ValueError("the mosaic holds NaN or infinite values")
    bounds = _clip_bounds(planes)
    stride = max(1, math.ceil(math.sqrt(planes[0].size / max(max_samples, 1))))
    samples = [_plane_samples(p, bounds, stride) for p in planes]
    usable = [s for s in samples if s is not None]
    if not usable:
        raise ValueError(f"mosaic of shape {m.shape} is too small to estimate noise")
    min_chosen = 40
    a, b, lv, var = _fit_groups(_groups(_Samples.concat(usable), n_groups, select, min_chosen), bounds)
    per_plane = []
    for s in samples:
        if s is None:
            per_plane.append((math.nan, math.nan))
            continue
        pa, pb, _, _ = _fit_groups(_groups(s, max(n_groups // 2, 4), select, min_chosen), bounds)
        per_plane.append((pa, pb))
    return NLFEstimate(a=a, b=b, per_plane=tuple(per_plane), n_points=int(lv.size), levels=lv, variances=var)


def estimate_raw_nlf(raw: RawImage, **kwargs: float) -> NLFEstimate:
    """:func:`estimate_nlf` on a raw's mosaic, restricted to its default crop when it has one.

    Sensor borders outside the crop often hold masked or dead pixels (e.g. runs of zeros) that would look
    like clipping. The crop origin is rounded up to even coordinates so that the CFA pattern is unchanged.
    """
    m = raw.mosaic
    if raw.crop is not None:
        left, top, width, height = raw.crop
        l0, t0 = left + left % 2, top + top % 2
        m = m[t0:top + height, l0:left + width]
    return estimate_nlf(m, raw.pattern, **kwargs)  # type: ignore[arg-type]
