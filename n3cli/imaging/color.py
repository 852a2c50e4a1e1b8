"""Colour conversions with MATLAB's conventions, for numpy (..., H, W, 3) and torch (..., 3, H, W).

Values are floats in [0, 1]. ``rgb2ycbcr`` is MATLAB's BT.601 ``rgb2ycbcr`` for double images:
Y lies in [16, 235]/255 and Cb, Cr in [16, 240]/255. The channel axis is the last one for numpy
arrays and the third from last for torch tensors; single-channel results keep that axis.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

ArrayT = TypeVar("ArrayT", np.ndarray, Tensor)

# MATLAB rgb2ycbcr: 255·YCbCr = OFFSET + MATRIX · RGB for RGB in [0, 1].
_MATRIX = np.array([[65.481, 128.553, 24.966],
                    [-37.797, -74.203, 112.0],
                    [112.0, -93.786, -18.214]], dtype=np.float64)
_OFFSET = np.array([16.0, 128.0, 128.0], dtype=np.float64)
_INVERSE = np.linalg.inv(_MATRIX)

# BT.601 luma weights, for gray models' inputs (no offset: black stays 0, white stays 1).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _float_np(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def _check_channels(x: np.ndarray | Tensor, want: int) -> None:
    n = x.shape[-1] if isinstance(x, np.ndarray) else (x.shape[-3] if x.dim() >= 3 else -1)
    if n != want:
        layout = "(..., H, W, C)" if isinstance(x, np.ndarray) else "(..., C, H, W)"
        raise ValueError(f"expected {want} channels in layout {layout}, got shape {tuple(x.shape)}")


def _affine(x: ArrayT, matrix: np.ndarray, offset: np.ndarray, pre: np.ndarray | None = None) -> ArrayT:
    """out = matrix · (x - pre) + offset over the channel axis."""
    if isinstance(x, Tensor):
        m = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
        o = torch.as_tensor(offset, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        if pre is not None:
            x = x - torch.as_tensor(pre, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return torch.einsum("ij,...jhw->...ihw", m, x) + o
    x = _float_np(x)
    if pre is not None:
        x = x - pre.astype(x.dtype)
    return (x @ matrix.T.astype(x.dtype) + offset.astype(x.dtype)).astype(x.dtype, copy=False)


def rgb2ycbcr(rgb: ArrayT) -> ArrayT:
    """MATLAB ``rgb2ycbcr`` (BT.601) of an RGB image in [0, 1]; returns YCbCr in [0, 1]."""
    _check_channels(rgb, 3)
    return _affine(rgb, _MATRIX / 255.0, _OFFSET / 255.0)


def ycbcr2rgb(ycbcr: ArrayT) -> ArrayT:
    """MATLAB ``ycbcr2rgb``: the exact inverse of :func:`rgb2ycbcr` (no clipping)."""
    _check_channels(ycbcr, 3)
    return _affine(ycbcr, _INVERSE * 255.0, np.zeros(3), pre=_OFFSET / 255.0)


def rgb2y(rgb: ArrayT) -> ArrayT:
    """The Y channel of MATLAB ``rgb2ycbcr`` (in [16, 235]/255), channel axis kept with size 1."""
    _check_channels(rgb, 3)
    return _affine(rgb, _MATRIX[:1] / 255.0, _OFFSET[:1] / 255.0)


def to_gray(img: ArrayT) -> ArrayT:
    """BT.601 luma 0.299 R + 0.587 G + 0.114 B (no offset); 1-channel inputs are returned unchanged."""
    n = img.shape[-1] if isinstance(img, np.ndarray) else img.shape[-3]
    if n == 1:
        return img
    _check_channels(img, 3)
    return _affine(img, np.array([LUMA_WEIGHTS]), np.zeros(1))


# Opponent colour space for denoising colour images with a gray model (as CBM3D does). Its three rows are
# orthogonal, so i.i.d. Gaussian RGB noise of σ stays i.i.d. across the opponent channels, with σ scaled by
# each row's norm; the rows are scaled so every channel of an image in [0, 1] stays in [0, 1]:
# luma (R+G+B)/3, red-blue (R-B)/2 + 1/2, green-magenta (R-2G+B)/4 + 1/2.
_OPP_MATRIX = np.array([[1 / 3, 1 / 3, 1 / 3],
                        [1 / 2, 0.0, -1 / 2],
                        [1 / 4, -1 / 2, 1 / 4]], dtype=np.float64)
_OPP_OFFSET = np.array([0.0, 0.5, 0.5], dtype=np.float64)
_OPP_INVERSE = np.linalg.inv(_OPP_MATRIX)
#: σ of each opponent channel per unit σ of i.i.d. RGB noise (the rows' norms: 1/√3, 1/√2, √6/4).
OPPONENT_NOISE_GAIN = tuple(float(g) for g in np.linalg.norm(_OPP_MATRIX, axis=1))


def rgb2opponent(rgb: ArrayT) -> ArrayT:
    """RGB in [0, 1] → (luma, red-blue, green-magenta), each in [0, 1] (see ``OPPONENT_NOISE_GAIN``)."""
    _check_channels(rgb, 3)
    return _affine(rgb, _OPP_MATRIX, _OPP_OFFSET)


def opponent2rgb(opp: ArrayT) -> ArrayT:
    """The exact inverse of :func:`rgb2opponent` (no clipping)."""
    _check_channels(opp, 3)
    return _affine(opp, _OPP_INVERSE, np.zeros(3), pre=_OPP_OFFSET)
