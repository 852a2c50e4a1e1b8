"""Colour denoising with a gray model: opponent colour space against channel by channel (api.denoise)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from n3cli import api
from n3cli.errors import N3Error
from n3cli.imaging.color import OPPONENT_NOISE_GAIN
from n3cli.weights import ModelInfo

from .conftest import tiny_nlf_weights


def _noisy_crop(sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data

    clean = data.astronaut()[100:164, 180:244].astype(np.float32) / 255.0
    rng = np.random.default_rng(seed)
    return clean, clean + rng.normal(0.0, sigma / 255.0, clean.shape).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def test_color_mode_rules() -> None:
    cond = ModelInfo(name="c", planes=["image", "sqrt_a", "sqrt_b"])
    fixed = ModelInfo(name="f", sigma=25.0)
    assert api.color_mode(cond, 3) == "opponent"
    assert api.color_mode(cond, 1) == "gray"
    assert api.color_mode(cond, 3, nlf=(1e-3, 1e-5)) == "rgb"  # an NLF of R, G, B is not the opponent channels'
    assert api.color_mode(fixed, 3) == "rgb"  # one σ only: the opponent channels' levels differ
    assert api.color_mode(cond, 3, "rgb") == "rgb"
    with pytest.raises(N3Error, match="noise-level-conditional"):
        api.color_mode(fixed, 3, "opponent")
    with pytest.raises(N3Error, match="not an NLF"):
        api.color_mode(cond, 3, "opponent", nlf=(1e-3, 1e-5))
    with pytest.raises(N3Error, match="unknown colour mode"):
        api.color_mode(cond, 3, "lab")


def test_channel_sigmas() -> None:
    _, noisy = _noisy_crop(25.0)
    np.testing.assert_allclose(api.channel_sigmas(noisy, 25.0, "opponent"), [25 * g for g in OPPONENT_NOISE_GAIN])
    assert api.channel_sigmas(noisy, (10.0, 20.0, 30.0), "rgb") == (10.0, 20.0, 30.0)
    est = api.channel_sigmas(noisy, None, "opponent")  # measured per opponent channel
    np.testing.assert_allclose(est, [25 * g for g in OPPONENT_NOISE_GAIN], rtol=0.15)
    with pytest.raises(N3Error, match="one per channel"):
        api.channel_sigmas(noisy, (10.0, 20.0), "opponent")
    with pytest.raises(N3Error, match=">= 0"):
        api.channel_sigmas(noisy, -1.0, "rgb")


def test_estimate_measures_correlated_noise_per_opponent_channel() -> None:
    """Noise shared by R, G and B (as demosaicking leaves it) is luma noise: measured as such, not as i.i.d."""
    clean, _ = _noisy_crop(0.0)
    shared = np.random.default_rng(3).normal(0.0, 20 / 255.0, clean.shape[:2] + (1,)).astype(np.float32)
    est = api.estimate_channel_sigmas(clean + shared, "opponent")
    assert est[0] > 15.0 and est[1] < 6.0 and est[2] < 6.0


def test_opponent_beats_channel_by_channel_with_the_shipped_model() -> None:
    clean, noisy = _noisy_crop(25.0)
    restorer = api.load_model(None, "denoise", "cpu")
    opp = api.denoise(noisy, 25.0, model=restorer)  # auto: opponent for a conditional model
    rgb = api.denoise(noisy, 25.0, model=restorer, color="rgb")
    assert opp.shape == rgb.shape == clean.shape and opp.dtype == np.float32
    assert _psnr(opp, clean) > _psnr(rgb, clean) + 0.5


def test_opponent_keeps_alpha_and_gray_is_unchanged(tmp_path: Path) -> None:
    restorer = api.load_model(tiny_nlf_weights(tmp_path), "denoise", "cpu")
    _, noisy = _noisy_crop(15.0)
    alpha = np.linspace(0, 1, noisy.shape[0] * noisy.shape[1], dtype=np.float32).reshape(noisy.shape[:2] + (1,))
    out = api.denoise(np.concatenate([noisy, alpha], axis=2), 15.0, model=restorer)
    assert out.shape == noisy.shape[:2] + (4,)
    np.testing.assert_array_equal(out[:, :, 3:], alpha)
    gray = noisy[:, :, 0]
    for color in ("auto", "opponent", "rgb"):  # the colour mode does not touch gray images
        np.testing.assert_array_equal(api.denoise(gray, 15.0, model=restorer, color=color),
                                      api.denoise(gray, 15.0, model=restorer))


def test_opponent_warns_on_the_channels_noise_levels(tmp_path: Path) -> None:
    restorer = api.load_model(tiny_nlf_weights(tmp_path), "denoise", "cpu")
    _, noisy = _noisy_crop(5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        api.denoise(noisy, 100.0, model=restorer)  # the opponent channels see at most 100/√2 ≈ 71 <= 75
    with pytest.warns(UserWarning, match="above the sigma"):
        api.denoise(noisy, 120.0, model=restorer)
