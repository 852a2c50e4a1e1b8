"""MATLAB-compatible colour conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n3cli.imaging.color import rgb2y, rgb2ycbcr, to_gray, ycbcr2rgb


def test_matlab_reference_values() -> None:
    # MATLAB: rgb2ycbcr(uint8([0 0 0; 255 255 255; 255 0 0])) = [16 128 128; 235 128 128; 81 90 240]
    rgb = np.array([[[0, 0, 0], [1, 1, 1], [1, 0, 0]]], dtype=np.float64)
    ycc = rgb2ycbcr(rgb) * 255
    np.testing.assert_allclose(ycc[0, 0], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 1], [235, 128, 128], atol=1e-3)
    np.testing.assert_array_equal(np.round(ycc[0, 2]), [81, 90, 240])
    np.testing.assert_allclose(rgb2y(rgb)[..., 0], ycc[..., 0] / 255)


def test_round_trip_numpy_and_torch() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((5, 7, 3))
    np.testing.assert_allclose(ycbcr2rgb(rgb2ycbcr(x)), x, atol=1e-12)
    assert rgb2ycbcr(x.astype(np.float32)).dtype == np.float32
    t = torch.from_numpy(x).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)  # (N, 3, H, W)
    yt = rgb2ycbcr(t)
    assert yt.shape == t.shape
    np.testing.assert_allclose(yt[0].permute(1, 2, 0).numpy(), rgb2ycbcr(x), atol=1e-12)
    torch.testing.assert_close(ycbcr2rgb(yt), t)
    assert rgb2y(t).shape == (2, 1, 5, 7)


def test_to_gray() -> None:
    x = np.ones((2, 3, 3)) * np.array([1.0, 0.5, 0.0])
    np.testing.assert_allclose(to_gray(x)[..., 0], 0.299 + 0.5 * 0.587)
    t = torch.rand(1, 3, 4, 4)
    assert to_gray(t).shape == (1, 1, 4, 4)
    g = torch.rand(1, 1, 4, 4)
    assert to_gray(g) is g
    with pytest.raises(ValueError):
        rgb2ycbcr(np.zeros((4, 4, 2)))


def test_opponent_round_trip_and_range() -> None:
    from n3cli.imaging.color import opponent2rgb, rgb2opponent

    rng = np.random.default_rng(1)
    x = rng.random((6, 5, 3))
    np.testing.assert_allclose(opponent2rgb(rgb2opponent(x)), x, atol=1e-12)
    t = torch.from_numpy(x).permute(2, 0, 1)[None]
    torch.testing.assert_close(opponent2rgb(rgb2opponent(t)), t)
    corners = np.array([[[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)]], dtype=np.float64)
    opp = rgb2opponent(corners)  # every channel of the RGB cube's corners stays within [0, 1]
    assert opp.min() >= 0.0 and opp.max() <= 1.0
    np.testing.assert_allclose(rgb2opponent(np.full((1, 1, 3), 0.3))[0, 0], [0.3, 0.5, 0.5])  # gray: no chroma


def test_opponent_keeps_iid_noise_iid_with_known_gains() -> None:
    from n3cli.imaging.color import OPPONENT_NOISE_GAIN, rgb2opponent

    noise = np.random.default_rng(2).normal(0.0, 0.1, (400_000, 1, 3))
    opp = rgb2opponent(noise + 0.5)[:, 0] - rgb2opponent(np.full((1, 1, 3), 0.5))[0, 0]
    cov = np.cov(opp.T)
    np.testing.assert_allclose(np.sqrt(np.diag(cov)), 0.1 * np.array(OPPONENT_NOISE_GAIN), rtol=5e-3)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    assert np.abs(corr[~np.eye(3, dtype=bool)]).max() < 0.01  # orthogonal rows: independent channels
    np.testing.assert_allclose(OPPONENT_NOISE_GAIN, [1 / np.sqrt(3), 1 / np.sqrt(2), np.sqrt(6) / 4])
