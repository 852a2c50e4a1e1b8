"""PSNR / SSIM and the SR evaluation protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from n3cli.imaging.metrics import as_hwc, psnr, sr_luma, sr_metrics, ssim


def test_psnr_known_values() -> None:
    ref = np.zeros((8, 8))
    assert psnr(ref, ref) == math.inf
    assert psnr(ref + 0.1, ref) == pytest.approx(20.0)
    assert psnr(ref + 25.5, ref, data_range=255) == pytest.approx(20.0)
    t = torch.zeros(1, 3, 8, 8)
    assert psnr(t + 0.01, t) == pytest.approx(40.0)


def test_ssim_gray_rgb_and_layouts() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    s = ssim(noisy, x)
    assert 0 < s < 1
    assert ssim(noisy[:, :, None], x[:, :, None]) == pytest.approx(s)
    t = torch.from_numpy(noisy)[None, None]
    assert ssim(t, torch.from_numpy(x)[None, None]) == pytest.approx(s)
    rgb = np.stack([x, x, x], axis=-1)
    assert ssim(np.stack([noisy] * 3, axis=-1), rgb) == pytest.approx(s)
    assert as_hwc(torch.zeros(3, 4, 5)).shape == (4, 5, 3)
    with pytest.raises(ValueError):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))


def test_sr_protocol_crops_and_uses_y() -> None:
    rng = np.random.default_rng(1)
    hr = rng.integers(0, 256, (20, 24, 3)) / 255.0
    sr = hr.copy()
    sr[:2] = 0  # damage only inside the cropped border
    assert sr_metrics(sr, hr, 2).psnr == math.inf
    assert sr_luma(hr, 3).shape == (14, 18, 1)
    gray = hr[:, :, :1]
    assert sr_metrics(gray * 0.5, gray, 2).psnr < 20
    y = sr_luma(hr, 0, round_y=True)
    np.testing.assert_array_equal(np.round(y * 255), y * 255)
    with pytest.raises(ValueError):
        sr_metrics(sr[:-1], hr, 2)
