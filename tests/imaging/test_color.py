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
