"""Noise level functions: the DNG tag and the single-image estimator."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from n3cli.imaging.noise import add_heteroscedastic, add_poisson_gaussian, generator
from n3cli.raw.io import RawError, RawImage
from n3cli.raw.nlf import estimate_nlf, estimate_raw_nlf, nlf_from_dng
from n3cli.raw.nlf_eval import evaluate, skimage_samples, summarise


def test_nlf_from_dng(blackmagic_path: Path, tmp_path: Path) -> None:
    assert nlf_from_dng(blackmagic_path) is None  # this DNG has no NoiseProfile tag
    junk = tmp_path / "junk.dng"
    junk.write_bytes(b"not a tiff")
    with pytest.raises(RawError, match="junk.dng"):
        nlf_from_dng(junk)


@pytest.mark.parametrize("kind", ["poisson-gaussian", "heteroscedastic"])
@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize(("a", "b"), [(1e-4, 5e-7), (1e-2, 5e-5), (1e-1, 1e-5)])
def test_smooth_ramp(kind: str, clip: bool, a: float, b: float) -> None:
    """No texture: σ(0.5) within 10% (a = 0.1 with b = 1e-5: 10 photons at white, clipped at black)."""
    ramp = torch.linspace(0, 1, 256).repeat(256, 1)[None] ** 2
    add = add_poisson_gaussian if kind == "poisson-gaussian" else add_heteroscedastic
    noisy = add(ramp, a, b, generator(3), clip=clip)[0].numpy()
    est = estimate_nlf(noisy, "RGGB")
    assert est.sigma(0.5) == pytest.approx(math.sqrt(0.5 * a + b), rel=0.1)
    assert len(est.per_plane) == 4 and est.n_points >= 10


def test_single_plane_and_errors() -> None:
    rng = np.random.default_rng(0)
    flat = (0.3 + 0.01 * rng.standard_normal((128, 128))).astype(np.float32)
    est = estimate_nlf(flat, None)
    assert est.sigma(0.3) == pytest.approx(0.01, rel=0.1) and len(est.per_plane) == 1
    with pytest.raises(ValueError):
        estimate_nlf(np.zeros((6, 6), np.float32))
    with pytest.raises(ValueError):
        estimate_nlf(np.full((64, 64), np.nan, np.float32))


def test_synthetic_benchmark_small() -> None:
    """Paper NLF range, raw-like images (Eq. 13), clipped like a sensor: median σ(0.5) error ≤ 15%."""
    trials = evaluate(skimage_samples(), n=10, seed=0, clip=True)
    s = summarise(trials)
    assert s["median_err_sigma05"] <= 0.15, s


def test_blackmagic_estimate(blackmagic: RawImage) -> None:
    est = estimate_raw_nlf(blackmagic)
    assert math.isfinite(est.a) and math.isfinite(est.b) and est.a > 0
    assert 1e-4 < est.sigma(0.5) < 1e-2  # a clean low-ISO daylight frame
