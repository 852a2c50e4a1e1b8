"""PSNR / SSIM and the super-resolution evaluation protocol, in one place.

Images are numpy arrays (H, W), (H, W, 1) or (H, W, 3), or torch tensors (C, H, W) / (1, C, H, W),
with values in [0, 1] (``data_range`` 1). SSIM is Wang et al.'s reference (Gaussian window
σ = 1.5, population covariances) via scikit-image.

SR protocol (:func:`sr_metrics`, the MATLAB one behind the published tables): both images are
rounded to 8-bit levels (as saved uint8 images), converted to the Y channel of MATLAB ``rgb2ycbcr``
and Y is rounded to 8-bit levels too (what ``rgb2ycbcr`` returns for uint8 images); ``scale`` pixels
are cropped at every border; PSNR and SSIM are computed on Y in [0, 1]. With MATLAB bicubic
(:func:`n3cli.imaging.resize.imresize`, LR and output rounded to uint8) this gives on Set5
33.649 / 30.386 / 28.419 dB and SSIM 0.9295 / 0.8679 / 0.8102 at ×2 / ×3 / ×4 (published:
33.66 / 30.39 / 28.42 dB, 0.9299 / 0.8682 / 0.8104). ``round_y=False`` keeps Y in float (the
PyTorch repositories' habit): 33.682 / 30.405 / 28.431 dB.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from skimage.metrics import structural_similarity

from n3cli.imaging.color import rgb2y

ImageLike = np.ndarray | torch.Tensor


class Scores(NamedTuple):
    psnr: float
    ssim: float


def as_hwc(x: ImageLike) -> np.ndarray:
    """A float64 numpy image (H, W, C) from numpy (H, W[, C]) or torch (C, H, W) / (1, C, H, W)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().to("cpu", torch.float64)
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"expected one image, got a batch of shape {tuple(t.shape)}")
            t = t[0]
        if t.dim() == 2:
            t = t.unsqueeze(0)
        if t.dim() != 3:
            raise ValueError(f"expected a (C, H, W) tensor, got shape {tuple(x.shape)}")
        return t.permute(1, 2, 0).numpy()
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) array, got shape {a.shape}")
    return a


def _pair(x: ImageLike, ref: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_hwc(x), as_hwc(ref)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    return a, b


def psnr(x: ImageLike, ref: ImageLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (inf for identical images)."""
    a, b = _pair(x, ref)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim(x: ImageLike, ref: ImageLike, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang et al. 2004); RGB images are averaged over channels."""
    a, b = _pair(x, ref)
    kwargs = dict(data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    if a.shape[2] == 1:
        return float(structural_similarity(a[:, :, 0], b[:, :, 0], **kwargs))
    return float(structural_similarity(a, b, channel_axis=2, **kwargs))


def _round8(a: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(a, 0.0, 1.0) * 255.0 + 0.5) / 255.0


def sr_luma(img: ImageLike, scale: int, quantize: bool = True, round_y: bool = True) -> np.ndarray:
    """The image as it enters SR metrics: 8-bit levels, MATLAB Y (RGB only), ``scale`` border cropped."""
    a = as_hwc(img)
    if quantize:
        a = _round8(a)
    if a.shape[2] == 3:
        a = rgb2y(a)
        if round_y:
            a = np.floor(a * 255.0 + 0.5) / 255.0
    elif a.shape[2] != 1:
        raise ValueError(f"expected a gray or RGB image, got {a.shape[2]} channels")
    if scale > 0:
        if a.shape[0] <= 2 * scale or a.shape[1] <= 2 * scale:
            raise ValueError(f"image {a.shape[:2]} too small to crop {scale} border pixels")
        a = a[scale:-scale, scale:-scale]
    return a


def sr_metrics(sr: ImageLike, hr: ImageLike, scale: int, *, quantize: bool = True,
               round_y: bool = True) -> Scores:
    """PSNR / SSIM of a super-resolved image against its HR image with the published SR protocol."""
    a, b = as_hwc(sr), as_hwc(hr)
    if a.shape != b.shape:
        raise ValueError(f"SR and HR shapes differ: {a.shape} vs {b.shape} "
                         "(crop HR to a multiple of the scale)")
    ya = sr_luma(a, scale, quantize, round_y)
    yb = sr_luma(b, scale, quantize, round_y)
    return Scores(psnr(ya, yb), ssim(ya, yb))
