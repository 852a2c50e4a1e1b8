"""MATLAB-compatible bicubic imresize, including the published Set5 bicubic baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from n3cli.imaging.metrics import sr_metrics
from n3cli.imaging.resize import contributions, imresize, imresize_np, output_size


def test_scale_one_is_identity() -> None:
    x = torch.rand(2, 3, 9, 14, dtype=torch.float64)
    torch.testing.assert_close(imresize(x, 1.0), x, rtol=0, atol=0)
    torch.testing.assert_close(imresize(x, size=(9, 14)), x, rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2.0, 3.0, 0.5, 1 / 3, 0.25, 1.7, (0.5, 3.0)])
def test_constant_stays_constant(scale: float | tuple[float, float]) -> None:
    x = torch.full((1, 2, 13, 21), 0.37, dtype=torch.float64)
    y = imresize(x, scale)
    torch.testing.assert_close(y, torch.full_like(y, 0.37), rtol=0, atol=1e-12)


def test_output_sizes() -> None:
    assert output_size((255, 256), 1 / 3) == (85, 86)
    assert output_size((10, 11), 0.5) == (5, 6)
    x = torch.rand(1, 1, 10, 11)
    assert imresize(x, 2).shape[-2:] == (20, 22)
    assert imresize(x, size=(7, 30)).shape[-2:] == (7, 30)
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(ValueError):
        imresize(x, 2, size=(4, 4))


def test_reproduces_quadratics_in_the_interior() -> None:
    # Keys' cubic (a = -0.5) interpolates quadratics exactly; with MATLAB's mapping output pixel j
    # (1-based) samples the input at u = j/s + (1 - 1/s)/2.
    n, s = 20, 3
    i = np.arange(1, n + 1, dtype=np.float64)
    q = 0.01 * i**2 - 0.3 * i + 2
    row = torch.from_numpy(q)[None, :].repeat(4, 1)
    out = imresize(row, (1, s))[0].numpy()
    j = np.arange(1, n * s + 1)
    u = j / s + 0.5 * (1 - 1 / s)
    inner = (u > 3) & (u < n - 2)
    np.testing.assert_allclose(out[inner], (0.01 * u**2 - 0.3 * u + 2)[inner], atol=1e-12)


def test_contributions_shrinking_uses_wider_kernel() -> None:
    idx, w = contributions(40, 10, 0.25)
    assert w.shape[1] >= 16  # kernel width 4 / 0.25 = 16 input pixels
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    assert idx.min() >= 0 and idx.max() < 40
    idx_up, w_up = contributions(10, 20, 2.0)
    assert w_up.shape[1] <= 6


def test_batch_dtype_and_numpy_wrapper() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((17, 12, 3))
    ref = imresize_np(img, 0.5)
    assert ref.shape == (9, 6, 3) and ref.dtype == np.float64
    batch = torch.from_numpy(np.stack([img, img[::-1].copy()])).permute(0, 3, 1, 2)
    out = imresize(batch, 0.5)
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-12)
    out32 = imresize(batch.float(), 0.5)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, atol=1e-5, rtol=0)
    gray = imresize_np(img[:, :, 0].astype(np.float32), 2)
    assert gray.shape == (34, 24) and gray.dtype == np.float32
    u8 = imresize_np((img * 255).round().astype(np.uint8), 3)
    assert u8.dtype == np.uint8
    exact = imresize_np((img * 255).round(), 3)
    np.testing.assert_array_equal(u8, np.clip(np.floor(exact + 0.5), 0, 255))


PUBLISHED = {2: 33.66, 3: 30.39, 4: 28.42}


@pytest.mark.data
@pytest.mark.parametrize("round_y", [True, False])
def test_set5_bicubic_baseline(set5: Path, round_y: bool) -> None:
    """Published bicubic PSNR on Set5 (Y channel, MATLAB imresize, uint8 LR and output)."""
    for scale, published in PUBLISHED.items():
        scores = []
        for path in sorted(set5.glob("*.png")):
            with PILImage.open(path) as im:
                hr = np.asarray(im.convert("RGB"))
            h, w = hr.shape[:2]
            hr = hr[: h - h % scale, : w - w % scale]
            lr = imresize_np(hr, 1 / scale)  # uint8 in, rounded uint8 out (as MATLAB)
            bicubic = imresize_np(lr, scale)
            assert bicubic.shape == hr.shape
            scores.append(sr_metrics(bicubic / 255.0, hr / 255.0, scale, round_y=round_y).psnr)
        assert len(scores) == 5
        assert abs(np.mean(scores) - published) <= 0.03, (scale, np.mean(scores))
